//! Whether an instance takes a client of its tenant now: decided once,
//! in [`turn`], in one order (its version accepts, accepting is not
//! paused, a client waits, no idle sibling should take it instead), for a
//! guest's accept (super::accept) and for its listener's readiness
//! (`poll_accept`) alike.

use crate::account::InstanceAccount;
use crate::limits::admission::GateWaiter;
use crate::wasi::seam::Tenancy;
use std::net::TcpListener;
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;

/// What an instance does about its tenant's accept queue now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Take the next client.
    Take,
    /// Its guest version does not accept: a replaced one draining its
    /// connections, or a new one that has not taken over yet.
    NotCurrent,
    /// Accepting is paused after accepts failed for want of file
    /// descriptors: the clients wait in the backlog until the pause ends.
    Paused,
    /// No client waits.
    NoClient,
    /// A sibling instance, less loaded and listening, takes the client,
    /// for a moment (crate::limits::admission::defer_to_sibling).
    Defer,
}

/// Whether `instance` takes a client of `tenant` now: the one place this
/// is decided, in this order, for a guest's accept and for its listener's
/// readiness alike. `client_waiting` is asked only once the version may
/// accept and accepting is not paused (the caps are applied to each
/// client as it is taken: crate::limits::admission::Admission::admit).
pub fn turn(
    tenant: &dyn Tenancy,
    instance: &InstanceAccount,
    client_waiting: impl FnOnce() -> bool,
) -> Turn {
    if !tenant.may_accept(instance.generation) {
        return Turn::NotCurrent;
    }
    if tenant.admission().backoff.paused().is_some() {
        return Turn::Paused;
    }
    if !client_waiting() {
        // None queued: the next one may be left to a sibling afresh.
        crate::limits::admission::took_client(instance);
        return Turn::NoClient;
    }
    if tenant.defer_accept(instance) {
        return Turn::Defer;
    }
    Turn::Take
}

/// Whether `listener` (of `instance`'s guest version) has a client to
/// accept now ([`turn`]); if not, `cx` is woken when it may have (through
/// `waiter` while the tenant's accept gate is closed). Exact, as POSIX
/// `poll` is: ready only while a client waits in the queue and this
/// instance may take it, so a server that polls and then accepts never
/// blocks in the accept.
pub(super) fn poll_accept(
    listener: &AsyncFd<TcpListener>,
    tenant: &dyn Tenancy,
    instance: &InstanceAccount,
    waiter: &GateWaiter,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let admission = tenant.admission();
    loop {
        match turn(tenant, instance, || listener_has_client(listener, cx)) {
            Turn::Take => return Poll::Ready(()),
            // The look registered `cx` with the listener.
            Turn::NoClient => return Poll::Pending,
            Turn::NotCurrent => {
                // Set before the second look, so an opening in between is
                // not missed.
                waiter.set(cx.waker());
                if !tenant.may_accept(instance.generation) {
                    return Poll::Pending;
                }
            }
            Turn::Paused => {
                waiter.set(cx.waker());
                // False if the pause ended meanwhile: look again.
                if admission.backoff.wake_after_pause(&admission.gate) {
                    return Poll::Pending;
                }
            }
            Turn::Defer => {
                // A sibling takes it (it was woken too): look again once
                // the window has passed, or once an instance took a client.
                waiter.set(cx.waker());
                admission.wake_after_deferring();
                return Poll::Pending;
            }
        }
    }
}

/// Whether `listener`'s queue holds a client (or an error for the accept
/// to report); if not, `cx` is woken when it may. Tokio's readiness stays
/// set after the last client was taken until an accept finds the queue
/// empty, so the kernel is asked, without accepting.
fn listener_has_client(listener: &AsyncFd<TcpListener>, cx: &mut Context<'_>) -> bool {
    loop {
        let mut guard = match listener.poll_read_ready(cx) {
            Poll::Ready(Ok(guard)) => guard,
            // Let the accept report the error.
            Poll::Ready(Err(_)) => return true,
            Poll::Pending => return false,
        };
        if client_waiting(listener.get_ref()) {
            return true;
        }
        guard.clear_ready();
    }
}

/// Whether the listen queue of `listener` holds a client (or an error to
/// report): `poll(2)` without waiting.
pub(super) fn client_waiting(listener: &TcpListener) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for a descriptor `listener` keeps open.
    let n = unsafe { libc::poll(&raw mut fd, 1, 0) };
    n != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Account;
    use crate::limits::admission::{Admission, MAX_DEFER_MS, OpenConnection};
    use crate::limits::connection::Policed;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    /// A tenant as the accept decision sees it: which version accepts,
    /// its admission state, its instances (for the deferral).
    struct Tenant {
        account: Arc<Account>,
        admission: Arc<Admission>,
        current: u64,
        instances: Vec<Arc<InstanceAccount>>,
    }

    impl Tenancy for Tenant {
        fn account(&self) -> &Arc<Account> {
            &self.account
        }
        fn admission(&self) -> &Arc<Admission> {
            &self.admission
        }
        fn listener(&self, _: SocketAddr) -> Option<Arc<TcpListener>> {
            None
        }
        fn may_accept(&self, generation: u64) -> bool {
            generation == self.current
        }
        fn defer_accept(&self, instance: &InstanceAccount) -> bool {
            crate::limits::admission::defer_to_sibling(instance, &self.instances)
        }
        fn listening(&self, _: &InstanceAccount) {}
        fn police(&self, _: SocketAddr) -> Arc<Policed> {
            unreachable!("the decision admits no client")
        }
        fn open_connection(
            &self,
            _: std::net::IpAddr,
            _: u64,
            _: &Arc<InstanceAccount>,
            _: Option<tokio::task::AbortHandle>,
        ) -> OpenConnection {
            unreachable!("the decision admits no client")
        }
        fn max_connections(&self) -> u64 {
            1024
        }
        fn host_endpoints(&self) -> &Arc<crate::policy::HostEndpoints> {
            unreachable!("the decision grants nothing")
        }
    }

    /// A tenant whose current version 1 runs two listening instances
    /// holding `open` connections each.
    fn tenant(open: [u64; 2]) -> Tenant {
        let instances: Vec<Arc<InstanceAccount>> = (0..2)
            .map(|index| {
                let instance = InstanceAccount::new(1, index);
                instance.listening.store(true, Ordering::Relaxed);
                instance.open.store(open[index as usize], Ordering::Relaxed);
                Arc::new(instance)
            })
            .collect();
        Tenant {
            account: Arc::new(Account::new("t")),
            admission: Arc::default(),
            current: 1,
            instances,
        }
    }

    #[test]
    fn an_instance_of_the_current_version_with_a_client_waiting_takes_it() {
        let t = tenant([0, 0]);
        assert_eq!(turn(&t, &t.instances[0], || true), Turn::Take);
    }

    #[test]
    fn a_draining_or_not_yet_current_version_never_takes_one_nor_looks() {
        let mut t = tenant([0, 0]);
        t.current = 2;
        let looked = std::cell::Cell::new(false);
        let turned = turn(&t, &t.instances[0], || {
            looked.set(true);
            true
        });
        assert_eq!(turned, Turn::NotCurrent);
        assert!(!looked.get(), "the queue is not asked about");
    }

    #[test]
    fn accepting_paused_after_running_out_of_descriptors_waits() {
        let t = tenant([0, 0]);
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        t.admission
            .backoff
            .failed(&t.account, ([127, 0, 0, 1], 1).into(), &emfile);
        assert_eq!(turn(&t, &t.instances[0], || true), Turn::Paused);
    }

    #[test]
    fn a_loaded_instance_leaves_a_client_to_an_idle_sibling_for_a_moment_only() {
        // Instance 0 holds 4, its sibling none: 4 >= 2 * (0 + 1).
        let t = tenant([4, 0]);
        let me = &t.instances[0];
        assert_eq!(turn(&t, me, || true), Turn::Defer);
        // Past the window (on the monotonic clock the window is kept on),
        // it takes the client itself.
        std::thread::sleep(std::time::Duration::from_millis(MAX_DEFER_MS + 1));
        assert_eq!(turn(&t, me, || true), Turn::Take);
        // The idle sibling never defers to the loaded one.
        assert_eq!(turn(&t, &t.instances[1], || true), Turn::Take);
    }

    #[test]
    fn two_instances_about_as_loaded_never_defer_to_each_other() {
        let t = tenant([3, 2]);
        assert_eq!(turn(&t, &t.instances[0], || true), Turn::Take);
        assert_eq!(turn(&t, &t.instances[1], || true), Turn::Take);
    }

    #[test]
    fn an_empty_queue_ends_a_deferral_so_the_next_client_may_be_left_afresh() {
        let t = tenant([4, 0]);
        let me = &t.instances[0];
        assert_eq!(turn(&t, me, || true), Turn::Defer);
        assert_ne!(me.deferring_since_ms.load(Ordering::Relaxed), 0);
        assert_eq!(turn(&t, me, || false), Turn::NoClient);
        assert_eq!(me.deferring_since_ms.load(Ordering::Relaxed), 0);
    }
}
