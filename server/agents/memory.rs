//! An agent's memory: the vector collection its spec names (or
//! `agent-<spec>`), created on first use with the server's default
//! embedding model. A task gets the `memory_top_k` closest memories to its
//! prompt as context (`tasks::context` fits them in the window), and with
//! `store_output` its answer is written back as
//! a point whose payload names the task.

use serde_json::{Map, Value, json};

use super::types::{Spec, Task};
use crate::error::{Error, Result};
use crate::memory::{
    Collections, CreateParams, Metric, PointData, PointInput, Points, Query, SearchParams,
};

/// The memory engine as the agents engine uses it.
#[derive(Debug, Clone)]
pub struct AgentMemory {
    /// Collection definitions (to create an agent's on first use).
    pub collections: Collections,
    /// Points (search, upsert).
    pub points: Points,
    /// The embedding model new agent collections use.
    pub embedding_model: String,
}

impl AgentMemory {
    /// Creates `name` unless it exists.
    async fn ensure(&self, name: &str) -> Result<()> {
        match self.collections.get(name.to_owned()).await {
            Ok(_) => return Ok(()),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let created = self
            .collections
            .create(CreateParams {
                name: name.to_owned(),
                dimensions: 0,
                metric: Some(Metric::Cosine),
                index: None,
                quantization: None,
                embedding_model: self.embedding_model.clone(),
                dedup_threshold: None,
            })
            .await;
        match created {
            Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The texts of the `memory_top_k` memories of `spec`'s collection
    /// closest to `text`, most similar first (none when `memory_top_k` is
    /// 0).
    pub async fn recall(&self, spec: &Spec, text: &str) -> Result<Vec<String>> {
        let k = spec.body.memory_top_k as usize;
        if k == 0 || text.is_empty() {
            return Ok(Vec::new());
        }
        let collection = spec.memory_collection();
        self.ensure(&collection).await?;
        let found = self
            .points
            .search(SearchParams {
                collection,
                query: Some(Query::Text(text.to_owned())),
                k,
                filter: None,
                ef_search: None,
                nprobe: None,
                score_threshold: None,
                with_payload: true,
                with_vector: false,
                rescore: None,
                oversampling: None,
            })
            .await?;
        Ok(found
            .hits
            .into_iter()
            .map(|hit| {
                let payload = hit.point.payload.unwrap_or_default();
                match payload.get("text") {
                    Some(Value::String(t)) => t.clone(),
                    _ => Value::Object(payload).to_string(),
                }
            })
            .collect())
    }

    /// Writes a finished task's output to `spec`'s collection (when the
    /// spec asks for it): the point's id is the task's, its payload holds
    /// the text and names the task, the agent and the spec.
    pub async fn store_output(&self, spec: &Spec, agent_id: &str, task: &Task) -> Result<()> {
        if !spec.body.store_output || task.body.output_text.is_empty() {
            return Ok(());
        }
        let collection = spec.memory_collection();
        self.ensure(&collection).await?;
        let payload: Map<String, Value> = match json!({
            "text": task.body.output_text,
            "task_id": task.id,
            "agent_id": agent_id,
            "spec": spec.name,
            "prompt": task.body.prompt,
        }) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        self.points
            .upsert(
                collection,
                vec![PointInput {
                    id: task.id.clone(),
                    data: Some(PointData::Text(task.body.output_text.clone())),
                    payload,
                }],
            )
            .await?;
        Ok(())
    }
}
