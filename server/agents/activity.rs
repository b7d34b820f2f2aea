//! The activity log: every change of the engine is an event with a
//! strictly increasing id, written in the same store transaction as the
//! change. ListEvents pages through it; WatchEvents replays from an id and
//! then follows live, after each wake-up from the recent events kept in
//! memory ([`super::tail`]) when they cover what comes next, else from the
//! store, so there is no gap or duplicate at the seam between replay and
//! live.

use futures::Stream;

use super::engine::{AgentEngine, activity_of};
use super::tail::TailRead;
use super::types::{Activity, ActivityFilter};
use crate::common::blocking::with_store;
use crate::common::page::{self, Page};
use crate::common::sync::lock;
use crate::error::{Error, Result};
use crate::store::EventQuery;

/// Events read from the store per wake-up of a watcher.
const WATCH_BATCH: usize = 256;

fn query_of(f: &ActivityFilter) -> EventQuery {
    EventQuery {
        kinds: f.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        agent_id: f.agent_id.clone(),
        swarm_id: f.swarm_id.clone(),
        task_id: f.task_id.clone(),
    }
}

impl AgentEngine {
    /// One page of events in id order.
    pub async fn list_events(
        &self,
        filter: ActivityFilter,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page<Activity>> {
        let limit = page::page_size(page_size);
        let cursor = page::cursor(page_token)?;
        let after = if cursor.is_empty() {
            0
        } else {
            cursor.parse::<u64>().map_err(|_| {
                Error::invalid(
                    "page_token",
                    "is not a next_page_token this server returned",
                )
            })?
        };
        let query = query_of(&filter);
        let rows = with_store(&self.store, move |s| {
            s.list_events(&query, after, limit + 1)
        })
        .await?;
        let events = rows
            .into_iter()
            .map(activity_of)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(events, limit, |e| e.id.to_string()))
    }

    /// Events after `after` (None: only those appended from now on), then
    /// every later one as it is appended; never ends by itself.
    pub async fn watch_events(
        &self,
        filter: ActivityFilter,
        after: Option<u64>,
    ) -> Result<impl Stream<Item = Result<Activity>> + Send + 'static> {
        let mut wake = self.last_event.subscribe();
        // Subscribed first: an event appended from here on wakes the
        // watcher, whichever side of its first read it lands on.
        let start = match after {
            Some(id) => id,
            None => *wake.borrow_and_update(),
        };
        let store = self.store.clone();
        let query = query_of(&filter);
        let tail = self.tail.clone();
        let state = (
            (store, tail, filter),
            query,
            wake,
            start,
            std::collections::VecDeque::new(),
        );
        Ok(futures::stream::unfold(
            state,
            |((store, tail, filter), query, mut wake, mut next, mut buffer)| async move {
                loop {
                    if let Some(event) = buffer.pop_front() {
                        let state = ((store, tail, filter), query, wake, next, buffer);
                        return Some((Ok(event), state));
                    }
                    // Marked as seen before the read: an event appended
                    // after this point wakes the wait below, so none is
                    // missed between an empty read and the wait.
                    wake.borrow_and_update();
                    let recent = lock(&tail).read_after(next, &filter, WATCH_BATCH);
                    match recent {
                        TailRead::Events(events, upto) => {
                            next = upto;
                            buffer.extend(events);
                            continue;
                        }
                        TailRead::UpToDate => {
                            if wake.changed().await.is_err() {
                                return None;
                            }
                            continue;
                        }
                        TailRead::Miss => {}
                    }
                    let q = query.clone();
                    let read =
                        with_store(&store, move |s| s.list_events(&q, next, WATCH_BATCH)).await;
                    match read.and_then(|rows| {
                        rows.into_iter()
                            .map(activity_of)
                            .collect::<Result<Vec<_>>>()
                    }) {
                        Ok(rows) if !rows.is_empty() => {
                            next = rows.last().map_or(next, |e| e.id);
                            buffer.extend(rows);
                        }
                        Ok(_) => {
                            if wake.changed().await.is_err() {
                                return None;
                            }
                        }
                        Err(e) => {
                            let state = ((store, tail, filter), query, wake, next, buffer);
                            return Some((Err(e), state));
                        }
                    }
                }
            },
        ))
    }
}
