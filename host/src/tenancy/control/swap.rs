//! Swapping a tenant's component, whatever state the tenant is in: a
//! running one live (its supervisor starts the new version beside the old,
//! which drains), a stopped or failed one by starting it again; and the
//! swaps a component file's change triggers. The one path every swap
//! (control endpoint, file watcher, reload) goes through: [`Control::swap_to`].

use super::running::*;
use crate::config::model::{ComponentSource, TenantConfig};
use crate::registry::FetchPolicy;
use crate::tenancy::supervisor::{self, Command};
use crate::tenancy::tenant::{State, Tenant};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Why a swap asked for changed nothing: what the asker acts on (the
/// control endpoint answers 404, 503 and 422 for them).
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// No tenant of that name runs here.
    #[error("no tenant named {0:?}")]
    NoTenant(String),
    /// A graceful stop has begun: nothing changes any more.
    #[error("the host is stopping")]
    Stopping,
    /// The component cannot be used, or its guest did not start; the
    /// tenant is as it was.
    #[error("{0}")]
    Refused(String),
}

impl Control {
    /// Swaps tenant `name` to the component `source`, live. Fails, leaving
    /// the running version serving, if the component cannot be read,
    /// compiled, linked, or its guest does not start listening.
    pub async fn swap(
        &self,
        name: &str,
        source: ComponentSource,
        bytes: Option<Vec<u8>>,
    ) -> Result<Duration, SwapError> {
        let _one_at_a_time = self.ops.lock().await;
        if self.is_stopping() {
            return Err(SwapError::Stopping);
        }
        let tenant = self
            .running()
            .get(name)
            .map(|r| r.tenant.clone())
            .ok_or_else(|| SwapError::NoTenant(name.to_owned()))?;
        let (source, pre) = match (&source, bytes) {
            (ComponentSource::File(path), Some(bytes)) => self
                .compile(&path.display().to_string(), &bytes)
                .map(|pre| (source.clone(), pre)),
            _ => self.load(&source, "", FetchPolicy::SWAP).await,
        }
        .map_err(|e| SwapError::Refused(format!("{e:#}")))?;
        let config = TenantConfig {
            component: source,
            ..(*tenant.config()).clone()
        };
        self.swap_to(name, Arc::new(config), pre)
            .await
            .map_err(SwapError::Refused)
    }

    /// The one swap path: tenant `name` to `config` and its compiled
    /// `pre`, live if it runs, started again if its policy left it
    /// stopped or failed. Resolves once the new version listens.
    pub(super) async fn swap_to(
        &self,
        name: &str,
        config: Arc<TenantConfig>,
        pre: Compiled,
    ) -> Result<Duration, String> {
        let (commands, tenant) = {
            let running = self.running();
            let r = running
                .get(name)
                .ok_or_else(|| format!("no tenant named {name:?}"))?;
            (r.commands.clone(), r.tenant.clone())
        };
        if matches!(tenant.state(), State::Failed | State::Stopped) {
            return self.restart(name, &tenant, config, pre).await;
        }
        let config_component = config.component.to_string();
        let (reply, outcome) = oneshot::channel();
        commands
            .send(Command::Swap {
                config,
                pre: pre.clone(),
                reply,
            })
            .await
            .map_err(|_| format!("tenant {name:?} is not running"))?;
        let result = outcome
            .await
            .unwrap_or_else(|_| Err(format!("tenant {name:?} stopped during the swap")));
        match &result {
            Ok(took) => {
                if let Some(r) = self.running().get_mut(name) {
                    r.pre = Some(pre);
                }
                info!(
                    tenant = name,
                    component = %config_component,
                    ms = took.as_millis(),
                    "live swap done"
                );
            }
            Err(e) => warn!(
                tenant = name,
                "live swap refused, the running version keeps serving: {e}"
            ),
        }
        result
    }

    /// Starts a tenant its restart policy left stopped or failed again, with
    /// `config` and `pre`: its addresses are listened on anew and it gets a
    /// fresh supervisor (and crash-loop count). Resolves once it listens.
    async fn restart(
        &self,
        name: &str,
        tenant: &Arc<Tenant>,
        config: Arc<TenantConfig>,
        pre: Compiled,
    ) -> Result<Duration, String> {
        let started = std::time::Instant::now();
        let (old_config, old_state) = (tenant.config(), tenant.state());
        let mut opened = Vec::new();
        for addr in &config.listen {
            if tenant.listener(*addr).is_none() {
                let listener = crate::tenancy::listeners::host_listener(*addr)
                    .map_err(|e| format!("cannot listen on {addr} again: {e}"))?;
                opened.push((*addr, Arc::new(listener)));
            }
        }
        tenant.add_listeners(opened);
        tenant.set_config(config);
        tenant.set_state(State::Starting);
        let (commands, inbox) = mpsc::channel(4);
        let task = tokio::spawn(supervisor::supervise(
            self.supervision(),
            pre.clone(),
            tenant.clone(),
            inbox,
        ));
        let previous = self.running().get_mut(name).map(|r| {
            (
                std::mem::replace(&mut r.commands, commands),
                r.pre.replace(pre),
                // Replacing the handle of the supervisor that ended.
                r.task.replace(task),
            )
        });
        info!(tenant = name, "restarting a {old_state} tenant on request");
        let outcome = self.until_started(tenant, started).await;
        if outcome.is_err() {
            // All or nothing, as a failed swap of a running tenant: the
            // attempt is stopped, and the tenant is left as it was: its
            // configuration, its state, its addresses closed.
            let attempt = previous.and_then(|(commands, pre, task)| {
                let mut running = self.running();
                let r = running.get_mut(name)?;
                r.commands = commands;
                r.pre = pre;
                std::mem::replace(&mut r.task, task)
            });
            if let Some(attempt) = attempt {
                // Gone before the state is restored, so it cannot write it.
                attempt.abort();
                let _ = attempt.await;
            }
            tenant.close_listeners();
            tenant.set_config(old_config);
            tenant.set_state(old_state);
        }
        outcome
    }

    /// Waits until `tenant`, started again at `started`, runs: how long it
    /// took, or why it does not.
    async fn until_started(
        &self,
        tenant: &Tenant,
        started: std::time::Instant,
    ) -> Result<Duration, String> {
        let name = tenant.name();
        let deadline = tokio::time::Instant::from_std(started) + supervisor::SWAP_TIMEOUT;
        match tenant
            .until_state(|state| state != State::Starting, deadline)
            .await
        {
            Some(State::Running) => {
                let took = started.elapsed();
                info!(tenant = name, ms = took.as_millis(), "tenant restarted");
                Ok(took)
            }
            None => Err(format!(
                "it did not listen within {:?}",
                supervisor::SWAP_TIMEOUT
            )),
            Some(state) => {
                let why = tenant
                    .snapshot()
                    .last_error
                    .unwrap_or_else(|| "it stopped".into());
                Err(format!("restarted, but it is {state} again: {why}"))
            }
        }
    }

    /// Swaps every tenant running the component file `path` whose content
    /// changed (the file watcher's trigger). Decided under the operations
    /// lock, against what each tenant runs then: a swap or reload that
    /// came first is not undone.
    pub async fn component_file_changed(&self, path: &Path) {
        let _one_at_a_time = self.ops.lock().await;
        if self.is_stopping() {
            return;
        }
        let source = ComponentSource::File(path.to_owned());
        let tenants: Vec<(String, Option<Compiled>)> = self
            .running()
            .iter()
            .filter(|(_, r)| r.tenant.config().component == source)
            .map(|(name, r)| (name.clone(), r.pre.clone()))
            .collect();
        if tenants.is_empty() {
            return;
        }
        let pre = match self
            .reread(path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| self.compile(&path.display().to_string(), &bytes))
        {
            Ok(pre) => pre,
            Err(e) => {
                for (name, _) in &tenants {
                    warn!(
                        tenant = name,
                        "component file changed but cannot be used, keeping the running version: {e:#}"
                    );
                }
                return;
            }
        };
        for (name, running_pre) in tenants {
            // The same bytes (e.g. touched, or written back): nothing to do.
            if running_pre.is_some_and(|running| Arc::ptr_eq(&pre, &running)) {
                continue;
            }
            info!(tenant = name, file = %path.display(), "component file changed: swapping");
            let Some(tenant) = self.running().get(&name).map(|r| r.tenant.clone()) else {
                continue;
            };
            let config = TenantConfig {
                component: source.clone(),
                ..(*tenant.config()).clone()
            };
            let _ = self.swap_to(&name, Arc::new(config), pre.clone()).await;
        }
    }
}
