//! `agentd.v1.MemoryService`.
//!
//! The memory engine (`server/memory` on `server/store`) is not built yet, so
//! every RPC answers UNIMPLEMENTED naming it.

use tonic::{Request, Response, Status, Streaming};

use super::not_built;
use crate::error::Engine;
use crate::pb::v1::memory_service_server::{MemoryService, MemoryServiceServer};
use crate::pb::v1::*;

type Server = MemoryServiceServer<MemoryApi>;
const ENGINE: Engine = Engine::Memory;

/// The MemoryService handlers.
#[derive(Debug, Default, Clone)]
pub struct MemoryApi {}

#[tonic::async_trait]
impl MemoryService for MemoryApi {
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Put")
    }

    async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Get")
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Delete")
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        not_built::<Server, _>(ENGINE, "List")
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
