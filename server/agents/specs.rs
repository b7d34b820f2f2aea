//! Specs: registered by name, each registration a new version; agents keep
//! the version they were spawned with, and a spec cannot be deleted while
//! agents of it are not stopped.

use super::engine::{AgentEngine, new_event, spec_of};
use super::types::{ActivityKind, Spec, SpecBody};
use super::validate::{check_name, check_spec, check_spec_tools};
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::common::page::{self, Page};
use crate::common::sync::lock;
use crate::error::{Error, Result, Violations};
use crate::store::SpecDeleted;

/// Spec versions kept in memory before the cache starts over.
const MAX_CACHED_SPECS: usize = 1024;

/// What RegisterSpec did.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// The spec with its new version.
    pub spec: Spec,
    /// The name was new.
    pub created: bool,
}

impl AgentEngine {
    /// Registers spec `name` with `body` as its next version.
    pub async fn register_spec(&self, name: String, body: SpecBody) -> Result<Registered> {
        let mut v = Violations::new();
        check_spec(&name, &body, &|alias| self.is_model(alias), &mut v);
        match &self.query {
            Some(query) => check_spec_tools(&body, query, &mut v),
            None if !body.tools.is_empty() => {
                v.add("spec.tools", "the query service is disabled on this server")
            }
            None => {}
        }
        v.finish()?;
        let json = serde_json::to_string(&body)
            .map_err(|e| Error::Internal(format!("spec {name}: {e}")))?;
        let mut event = new_event(
            ActivityKind::SpecRegistered,
            format!("spec {name} registered"),
        );
        event.spec_name = name.clone();
        let key = name.clone();
        let written = with_store(&self.store, move |s| {
            s.register_spec(&key, &json, now_ms(), event)
        })
        .await?;
        self.appended(&written.events);
        Ok(Registered {
            spec: spec_of(written.spec)?,
            created: written.created,
        })
    }

    /// The current version of spec `name`.
    pub async fn get_spec(&self, name: String) -> Result<Spec> {
        let mut v = Violations::new();
        check_name("name", &name, &mut v);
        v.finish()?;
        let key = name.clone();
        let found = with_store(&self.store, move |s| s.get_spec(&key, None)).await?;
        let stored = found.ok_or(Error::NotFound { kind: "spec", name })?;
        spec_of(stored)
    }

    /// Current specs by name, optionally with `capability`.
    pub async fn list_specs(
        &self,
        capability: String,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page<Spec>> {
        let limit = page::page_size(page_size);
        let after = page::cursor(page_token)?;
        let rows = with_store(&self.store, move |s| {
            s.list_specs(&capability, &after, limit + 1)
        })
        .await?;
        let specs = rows.into_iter().map(spec_of).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(specs, limit, |s| s.name.clone()))
    }

    /// Version `version` of spec `name` (as agents of it run): kept in
    /// memory once read.
    pub(crate) async fn spec_version(&self, name: &str, version: u64) -> Result<Spec> {
        let key = (name.to_owned(), version);
        if let Some(spec) = lock(&self.spec_versions).get(&key) {
            return Ok(spec.clone());
        }
        let n = name.to_owned();
        let row = with_store(&self.store, move |s| s.get_spec(&n, Some(version))).await?;
        let spec = spec_of(row.ok_or_else(|| {
            Error::Internal(format!("version {version} of spec {name} is gone"))
        })?)?;
        let mut cache = lock(&self.spec_versions);
        if cache.len() >= MAX_CACHED_SPECS {
            cache.clear();
        }
        cache.insert(key, spec.clone());
        Ok(spec)
    }

    /// Deletes spec `name`: false when there was none; FailedPrecondition
    /// while agents of it are not stopped.
    pub async fn delete_spec(&self, name: String) -> Result<bool> {
        let mut v = Violations::new();
        check_name("name", &name, &mut v);
        v.finish()?;
        let mut event = new_event(ActivityKind::SpecDeleted, format!("spec {name} deleted"));
        event.spec_name = name.clone();
        let key = name.clone();
        match with_store(&self.store, move |s| s.delete_spec(&key, event)).await? {
            SpecDeleted::Deleted(events) => {
                lock(&self.spec_versions).retain(|(spec, _), _| *spec != name);
                self.appended(&events);
                Ok(true)
            }
            SpecDeleted::Absent => Ok(false),
            SpecDeleted::InUse(n) => Err(Error::WrongState(format!(
                "spec {name} has {n} agents that are not stopped; stop them first (StopAgent)"
            ))),
        }
    }
}
