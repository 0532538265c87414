//! The difference between what runs and what a manifest wants, as pure
//! data: which tenants to add, remove, change and keep. Computed without a
//! side effect and unit-tested here; applied by crate::tenancy::control.

use crate::config::model::TenantConfig;
use std::collections::BTreeMap;

/// What a reload is to do with each tenant, computed from what runs and
/// what the manifest wants alone (no side effect), then applied by
/// `Control::reload` (crate::tenancy::control).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Tenants in the manifest that do not run: started.
    pub add: Vec<String>,
    /// Tenants that run and are not in the manifest: stopped (draining).
    pub remove: Vec<String>,
    /// Tenants whose component or configuration differs, or that their
    /// restart policy left stopped or failed: swapped (started again).
    pub change: Vec<String>,
    /// Tenants exactly as the manifest wants them (perhaps written at
    /// another place in the file): left alone.
    pub keep: Vec<String>,
}

/// A running tenant, as [`plan_reload`] compares it.
#[derive(Debug)]
pub struct Current<'a, C> {
    /// Its configuration.
    pub config: &'a TenantConfig,
    /// Which compiled component it runs (compared for equality only).
    pub component: C,
    /// Left stopped or failed by its restart policy.
    pub stopped: bool,
}

/// The plan to go from `running` to `wanted` (each wanted tenant with the
/// compiled component its manifest entry names), tenants in manifest order.
pub fn plan_reload<C: PartialEq>(
    running: &BTreeMap<String, Current<'_, C>>,
    wanted: &[(&TenantConfig, C)],
) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    for (config, component) in wanted {
        let name = config.name.clone();
        match running.get(&config.name) {
            None => plan.add.push(name),
            Some(now)
                if now.config.runs_like(config) && now.component == *component && !now.stopped =>
            {
                plan.keep.push(name);
            }
            Some(_) => plan.change.push(name),
        }
    }
    plan.remove = running
        .keys()
        .filter(|name| !wanted.iter().any(|(c, _)| &c.name == *name))
        .cloned()
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::{Current, ReloadPlan, plan_reload};
    use crate::config::model::{ComponentSource, Limits, TenantConfig};
    use std::collections::BTreeMap;

    fn tenant(name: &str, component: &str) -> TenantConfig {
        TenantConfig {
            name: name.into(),
            group: crate::config::model::DEFAULT_GROUP.into(),
            component: ComponentSource::Builtin(component.into()),
            component_at: format!("tenants.toml:{}", name.len()),
            listen_at: String::new(),
            listen: vec!["127.0.0.1:9800".parse().unwrap()],
            env: Default::default(),
            connect: Vec::new(),
            limits: Limits::default(),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_reload_plan_adds_removes_changes_and_keeps_by_comparing_alone() {
        let (keep, moved, limits, component, stopped, gone) = (
            tenant("keep", "seed"),
            tenant("moved", "seed"),
            tenant("limits", "seed"),
            tenant("component", "seed"),
            tenant("stopped", "seed"),
            tenant("gone", "seed"),
        );
        let running: BTreeMap<String, Current<'_, u8>> = [
            (&keep, 1, false),
            (&moved, 1, false),
            (&limits, 1, false),
            (&component, 1, false),
            (&stopped, 1, true),
            (&gone, 1, false),
        ]
        .into_iter()
        .map(|(config, component, stopped)| {
            let now = Current {
                config,
                component,
                stopped,
            };
            (config.name.clone(), now)
        })
        .collect();
        let moved_in_file = TenantConfig {
            component_at: "tenants.toml:99".into(),
            ..moved.clone()
        };
        let mut tighter = limits.clone();
        tighter.limits.max_connections = 8;
        let new = tenant("new", "echo");
        let wanted = [
            (&keep, 1),
            (&moved_in_file, 1),
            (&tighter, 1),
            (&component, 2),
            (&stopped, 1),
            (&new, 3),
        ];
        assert_eq!(
            plan_reload(&running, &wanted),
            ReloadPlan {
                add: names(&["new"]),
                remove: names(&["gone"]),
                change: names(&["limits", "component", "stopped"]),
                keep: names(&["keep", "moved"]),
            }
        );
    }

    #[test]
    fn reloading_the_same_manifest_plans_nothing_but_keeping() {
        let (a, b) = (tenant("a", "seed"), tenant("b", "kv"));
        let running: BTreeMap<String, Current<'_, &str>> = [(&a, "x"), (&b, "y")]
            .into_iter()
            .map(|(config, component)| {
                let now = Current {
                    config,
                    component,
                    stopped: false,
                };
                (config.name.clone(), now)
            })
            .collect();
        let plan = plan_reload(&running, &[(&a, "x"), (&b, "y")]);
        assert_eq!(plan.keep, names(&["a", "b"]));
        assert!(plan.add.is_empty() && plan.remove.is_empty() && plan.change.is_empty());
    }
}
