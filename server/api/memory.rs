//! `agentd.v1.MemoryService`: validate, convert, call the memory engine,
//! convert back.
//!
//! Key-value memory is served; the vector collection RPCs answer
//! UNIMPLEMENTED naming their engine until it lands.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::{Request, Response, Status, Streaming};

use super::not_built;
use crate::error::{Engine, Error};
use crate::memory::{KvMemory, ListParams, PutParams};
use crate::pb::v1::memory_service_server::{MemoryService, MemoryServiceServer};
use crate::pb::v1::*;
use crate::store::KvEntry;

type Server = MemoryServiceServer<MemoryApi>;
const ENGINE: Engine = Engine::VectorCollections;

/// The MemoryService handlers.
#[derive(Debug, Clone)]
pub struct MemoryApi {
    kv: KvMemory,
}

impl MemoryApi {
    /// Serves `kv`.
    pub fn new(kv: KvMemory) -> Self {
        Self { kv }
    }
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn entry(e: KvEntry) -> MemoryEntry {
    MemoryEntry {
        namespace: e.namespace,
        key: e.key,
        value: e.value,
        content_type: e.content_type,
        metadata: e.metadata.into_iter().collect(),
        version: e.version,
        created_at: Some(timestamp(e.created_at)),
        updated_at: Some(timestamp(e.updated_at)),
        expires_at: e.expires_at.map(timestamp),
    }
}

fn ttl(d: Option<prost_types::Duration>) -> Result<Option<Duration>, Error> {
    d.map(|d| {
        Duration::try_from(d).map_err(|_| Error::invalid("ttl", "must be a non-negative duration"))
    })
    .transpose()
}

#[tonic::async_trait]
impl MemoryService for MemoryApi {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let r = request.into_inner();
        let stored = self
            .kv
            .put(PutParams {
                namespace: r.namespace,
                key: r.key,
                value: r.value,
                content_type: r.content_type,
                metadata: r.metadata.into_iter().collect::<BTreeMap<_, _>>(),
                ttl: ttl(r.ttl)?,
                if_version: r.if_version,
            })
            .await?;
        let mut stored = entry(stored);
        // The response carries the entry without its value: the caller has it.
        stored.value.clear();
        Ok(Response::new(PutResponse {
            entry: Some(stored),
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let r = request.into_inner();
        let found = self.kv.get(r.namespace, r.key).await?;
        Ok(Response::new(GetResponse {
            entry: Some(entry(found)),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let r = request.into_inner();
        let deleted = self.kv.delete(r.namespace, r.key, r.if_version).await?;
        Ok(Response::new(DeleteResponse { deleted }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let r = request.into_inner();
        let page = self
            .kv
            .list(ListParams {
                namespace: r.namespace,
                prefix: r.prefix,
                page_size: r.page_size as usize,
                page_token: r.page_token,
                include_values: r.include_values,
            })
            .await?;
        Ok(Response::new(ListResponse {
            entries: page.entries.into_iter().map(entry).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn create_collection(
        &self,
        _: Request<CreateCollectionRequest>,
    ) -> Result<Response<CreateCollectionResponse>, Status> {
        not_built::<Server, _>(ENGINE, "CreateCollection")
    }

    async fn get_collection(
        &self,
        _: Request<GetCollectionRequest>,
    ) -> Result<Response<GetCollectionResponse>, Status> {
        not_built::<Server, _>(ENGINE, "GetCollection")
    }

    async fn list_collections(
        &self,
        _: Request<ListCollectionsRequest>,
    ) -> Result<Response<ListCollectionsResponse>, Status> {
        not_built::<Server, _>(ENGINE, "ListCollections")
    }

    async fn delete_collection(
        &self,
        _: Request<DeleteCollectionRequest>,
    ) -> Result<Response<DeleteCollectionResponse>, Status> {
        not_built::<Server, _>(ENGINE, "DeleteCollection")
    }

    async fn collection_stats(
        &self,
        _: Request<CollectionStatsRequest>,
    ) -> Result<Response<CollectionStatsResponse>, Status> {
        not_built::<Server, _>(ENGINE, "CollectionStats")
    }

    async fn upsert(&self, _: Request<UpsertRequest>) -> Result<Response<UpsertResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Upsert")
    }

    async fn upsert_stream(
        &self,
        _: Request<Streaming<UpsertStreamRequest>>,
    ) -> Result<Response<UpsertStreamResponse>, Status> {
        not_built::<Server, _>(ENGINE, "UpsertStream")
    }

    async fn get_points(
        &self,
        _: Request<GetPointsRequest>,
    ) -> Result<Response<GetPointsResponse>, Status> {
        not_built::<Server, _>(ENGINE, "GetPoints")
    }

    async fn delete_points(
        &self,
        _: Request<DeletePointsRequest>,
    ) -> Result<Response<DeletePointsResponse>, Status> {
        not_built::<Server, _>(ENGINE, "DeletePoints")
    }

    async fn count(&self, _: Request<CountRequest>) -> Result<Response<CountResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Count")
    }

    async fn search(&self, _: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Search")
    }

    async fn search_batch(
        &self,
        _: Request<SearchBatchRequest>,
    ) -> Result<Response<SearchBatchResponse>, Status> {
        not_built::<Server, _>(ENGINE, "SearchBatch")
    }
}
