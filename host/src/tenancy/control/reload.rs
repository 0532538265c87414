//! Reloading the manifest: read it, prepare every change (components
//! loaded, addresses listened on, the pool's room checked) before
//! touching anything, plan the difference (crate::config::reload), then
//! apply it; counted by outcome.

use super::running::*;
use crate::config::manifest;
use crate::config::model::{self, ComponentSource, TenantConfig};
use crate::config::reload::{Current, ReloadPlan, plan_reload};
use crate::registry::FetchPolicy;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::sync::Arc;
use tracing::{info, warn};

/// What a manifest reload did.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    /// Tenants started.
    pub added: Vec<String>,
    /// Tenants stopped and removed.
    pub removed: Vec<String>,
    /// Tenants swapped to a new component or configuration.
    pub changed: Vec<String>,
    /// Tenants left exactly as they were.
    pub unchanged: Vec<String>,
    /// Tenants whose change failed (they keep running as they were, or stay
    /// stopped or failed).
    pub failed: BTreeMap<String, String>,
    /// `[host]` settings changed in the manifest, which take effect only
    /// when the host restarts.
    pub need_restart: Vec<&'static str>,
}

/// A tenant as a reload wants it: its configuration, the listeners the
/// reload opened for it, and its compiled component.
pub(super) type Reloaded = (
    TenantConfig,
    Vec<(std::net::SocketAddr, Arc<TcpListener>)>,
    Compiled,
);

/// Why a reload changed nothing: what the asker acts on (the control
/// endpoint answers 503 and 422 for them).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A graceful stop has begun: nothing changes any more.
    #[error("the host is stopping")]
    Stopping,
    /// The manifest, a component or an address cannot be used.
    #[error("{0}")]
    Refused(String),
}

impl From<String> for ReloadError {
    fn from(why: String) -> Self {
        ReloadError::Refused(why)
    }
}

impl From<&str> for ReloadError {
    fn from(why: &str) -> Self {
        ReloadError::Refused(why.to_owned())
    }
}

impl Control {
    /// Re-reads the manifest and applies the difference. Nothing changes if
    /// the manifest is invalid, a new component does not load, or a new
    /// address cannot be listened on. Counted by outcome (see
    /// [`Control::reload_counts`]).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let result = self.reload_uncounted().await;
        let outcome = match &result {
            Ok(report) if report.failed.is_empty() => 0,
            Ok(_) => 1,
            Err(_) => 2,
        };
        self.reloads[outcome].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    /// Reloads by outcome: applied whole, applied with some tenants'
    /// changes failed, refused (nothing changed).
    pub fn reload_counts(&self) -> [(&'static str, u64); 3] {
        let get = |i: usize| self.reloads[i].load(std::sync::atomic::Ordering::Relaxed);
        [
            ("applied", get(0)),
            ("partial", get(1)),
            ("refused", get(2)),
        ]
    }

    pub(super) async fn reload_uncounted(&self) -> Result<ReloadReport, ReloadError> {
        if self.is_stopping() {
            return Err(ReloadError::Stopping);
        }
        let path = self
            .manifest
            .as_ref()
            .ok_or("there is no manifest to reload (the host runs one tenant)")?;
        let mut manifest = manifest::load(path).map_err(|e| e.to_string())?;
        let group = self.group.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(group) = group {
            manifest.only_group(&group)?;
        }
        // The endpoints as bound (the command line's too, and a port 0
        // resolved): a grant reaching one is refused, as at start.
        for tenant in &manifest.tenants {
            if let Some(addr) = tenant
                .connect
                .iter()
                .find(|addr| self.endpoints.reached_by(**addr))
            {
                return Err(ReloadError::Refused(format!(
                    "tenant '{}': connect: {addr} is one of the host's own endpoints: no tenant may connect to it",
                    tenant.name
                )));
            }
        }
        // Pulled before the operations lock is taken, all at once: a slow
        // registry holds no swap or reload up, and below each component
        // is loaded from the store, pinned to what was pulled.
        self.prefetch(&mut manifest.tenants).await?;
        let _one_at_a_time = self.ops.lock().await;
        if self.is_stopping() {
            return Err(ReloadError::Stopping);
        }
        let need_restart = self
            .started_with
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|started| started.host_keys_changed(&manifest))
            .unwrap_or_default();
        self.fits_pool(&manifest)?;

        // Prepare everything that can fail before changing anything.
        let existing: HashMap<String, (Arc<TenantConfig>, Option<Compiled>)> = self
            .running()
            .iter()
            .map(|(name, r)| (name.clone(), (r.tenant.config(), r.pre.clone())))
            .collect();
        let prepared = self.prepare_reload(manifest.tenants, &existing).await?;
        let plan = self.plan(&existing, &prepared);

        let mut report = ReloadReport {
            need_restart,
            ..ReloadReport::default()
        };
        for name in plan.remove.clone() {
            self.remove(&name);
            report.removed.push(name);
        }
        self.apply_reload(&plan, prepared, &mut report).await;
        if !report.need_restart.is_empty() {
            warn!(
                keys = ?report.need_restart,
                "manifest reload: {} changed, which takes effect only when the host restarts",
                report.need_restart.join(", ")
            );
        }
        info!(
            added = report.added.len(),
            removed = report.removed.len(),
            changed = report.changed.len(),
            unchanged = report.unchanged.len(),
            failed = report.failed.len(),
            "manifest reloaded"
        );
        Ok(report)
    }

    /// Fetches every `tenants`' component named `oci://` at once, pinning
    /// each to the digest fetched: the first failure fails the reload.
    pub(super) async fn prefetch(&self, tenants: &mut [TenantConfig]) -> Result<(), String> {
        let fetches = tenants.iter().map(|t| async move {
            match &t.component {
                ComponentSource::Oci(reference) => Some(
                    self.puller
                        .fetch(reference, FetchPolicy::RELOAD)
                        .await
                        .map_err(|e| format!("{}: tenant.component: {e}", t.component_at)),
                ),
                _ => None,
            }
        });
        let fetched = futures_util::future::join_all(fetches).await;
        for (tenant, fetched) in tenants.iter_mut().zip(fetched) {
            if let Some(fetched) = fetched {
                tenant.component = ComponentSource::Oci(fetched?.reference);
            }
        }
        Ok(())
    }

    /// Whether `manifest` fits the pooling allocator as it was sized at
    /// start (it cannot grow).
    pub(super) fn fits_pool(&self, manifest: &model::Manifest) -> Result<(), String> {
        let Some((instances, max_memory)) = self.pool else {
            return Ok(());
        };
        let wanted = instances_of(&manifest.tenants, self.threads.count());
        if wanted > instances {
            return Err(format!(
                "the pooling allocator was sized at start for {instances} guest instances, and the manifest's tenants run {wanted}: restart the host to grow it"
            ));
        }
        if let Some(t) = manifest
            .tenants
            .iter()
            .find(|t| t.limits.max_memory > max_memory)
        {
            return Err(format!(
                "tenant '{}': max_memory {} is above the {max_memory} bytes the pooling allocator was sized for at start: restart the host to grow it",
                t.name, t.limits.max_memory
            ));
        }
        Ok(())
    }

    /// Opens the listeners a reload newly grants and compiles every
    /// wanted tenant's component: all that can fail, before anything
    /// changes.
    pub(super) async fn prepare_reload(
        &self,
        wanted: Vec<TenantConfig>,
        existing: &HashMap<String, (Arc<TenantConfig>, Option<Compiled>)>,
    ) -> Result<Vec<Reloaded>, String> {
        let mut prepared = Vec::new();
        for mut config in wanted {
            let old = existing.get(&config.name);
            let mut listeners = Vec::new();
            for (i, addr) in config.listen.iter_mut().enumerate() {
                // Port 0 means "any free port": a tenant that already has one
                // keeps it.
                if addr.port() == 0
                    && let Some(held) = old
                        .and_then(|(c, _)| c.listen.get(i))
                        .filter(|a| a.ip() == addr.ip())
                {
                    *addr = *held;
                }
                if old.is_some_and(|(c, _)| c.listen.contains(addr)) {
                    continue;
                }
                let listener = crate::tenancy::listeners::host_listener(*addr).map_err(|e| {
                    format!("tenant '{}': cannot listen on {addr}: {e}", config.name)
                })?;
                *addr = listener.local_addr().unwrap_or(*addr);
                listeners.push((*addr, Arc::new(listener)));
            }
            // A tag is resolved again: one that moved is a change (a
            // swap); a registry that cannot be reached keeps what runs.
            let (component, pre) = self
                .load(&config.component, &config.component_at, FetchPolicy::RELOAD)
                .await
                .map_err(|e| format!("{e:#}"))?;
            config.component = component;
            prepared.push((config, listeners, pre));
        }
        Ok(prepared)
    }

    /// What the reload is to do: [`plan_reload`] over what runs
    /// (`existing`) and what is `prepared`, components compared by identity
    /// (the loader compiles equal bytes once).
    pub(super) fn plan(
        &self,
        existing: &HashMap<String, (Arc<TenantConfig>, Option<Compiled>)>,
        prepared: &[Reloaded],
    ) -> ReloadPlan {
        let current: BTreeMap<String, Current<'_, *const ()>> = existing
            .iter()
            .map(|(name, (config, pre))| {
                let now = Current {
                    config,
                    component: pre
                        .as_ref()
                        .map_or(std::ptr::null(), |pre| Arc::as_ptr(pre).cast::<()>()),
                    stopped: self.is_stopped_for_good(name),
                };
                (name.clone(), now)
            })
            .collect();
        let wanted: Vec<(&TenantConfig, *const ())> = prepared
            .iter()
            .map(|(config, _, pre)| (config, Arc::as_ptr(pre).cast::<()>()))
            .collect();
        plan_reload(&current, &wanted)
    }

    /// Starts the tenants `plan` adds, swaps those it changes, and keeps
    /// the rest, into `report`.
    pub(super) async fn apply_reload(
        &self,
        plan: &ReloadPlan,
        prepared: Vec<Reloaded>,
        report: &mut ReloadReport,
    ) {
        for (config, listeners, pre) in prepared {
            let name = config.name.clone();
            if plan.add.contains(&name) {
                self.start(config, listeners.into_iter().map(|(_, l)| l).collect(), pre);
                report.added.push(name);
                continue;
            }
            if plan.keep.contains(&name) {
                // Only its place in the file may differ: keep that current.
                if let Some(r) = self.running().get(&name) {
                    r.tenant.set_config(Arc::new(config));
                }
                report.unchanged.push(name);
                continue;
            }
            let tenant = self.running().get(&name).map(|r| r.tenant.clone());
            let Some(tenant) = tenant else { continue };
            tenant.add_listeners(listeners.iter().cloned());
            let keep_addrs = config.listen.clone();
            let old_addrs = tenant.config().listen.clone();
            match self.swap_to(&name, Arc::new(config), pre).await {
                Ok(_) => {
                    tenant.retain_listeners(&keep_addrs);
                    report.changed.push(name);
                }
                Err(e) => {
                    tenant.retain_listeners(&old_addrs);
                    report.failed.insert(name, e);
                }
            }
        }
    }
}
