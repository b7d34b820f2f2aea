//! `agentd.v1.MemoryService`: convert, call the memory engine, convert
//! back (conversions in [`super::convert::memory`]).
//!
//! Every RPC is served: key-value memory, collections (with their stats),
//! points (Upsert, UpsertStream, GetPoints, DeletePoints, Count) and search.

use std::pin::Pin;
use std::time::Instant;

use tonic::{Request, Response, Status, Streaming};

use super::convert::memory::{points_from, search_response};
use super::rpc::Rpc;
use crate::error::Error;
use crate::memory::{
    Collections, CreateParams, Filter, Include, KvMemory, ListParams, Points, PutParams,
    SearchParams, Selector, UpsertOutcome,
};
use crate::pb::v1 as pb;
use crate::pb::v1::memory_service_server::MemoryService;

/// The MemoryService handlers.
#[derive(Debug, Clone)]
pub struct MemoryApi {
    kv: KvMemory,
    collections: Collections,
    points: Points,
}

impl MemoryApi {
    /// Serves key-value memory, collections and their points.
    pub fn new(kv: KvMemory, collections: Collections, points: Points) -> Self {
        Self {
            kv,
            collections,
            points,
        }
    }
}

/// One UpsertStream batch on its way to the store: its point count and
/// what the engine did.
type BatchCommit = Pin<Box<dyn Future<Output = Result<(u64, UpsertOutcome), Error>> + Send>>;

/// An optional filter, its errors under `filter`.
fn filter_from(filter: Option<pb::Filter>) -> Result<Option<Filter>, Error> {
    filter
        .map(|f| Filter::try_from(f).map_err(|e| e.within("filter")))
        .transpose()
}

#[tonic::async_trait]
impl MemoryService for MemoryApi {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let r = request.into_inner();
        let rpc = Rpc::on_namespace(&r.namespace)?;
        rpc.unary(
            async {
                let stored = self.kv.put(PutParams::try_from(r)?).await?;
                let mut entry = pb::MemoryEntry::from(stored);
                // The response carries the entry without its value: the caller has it.
                entry.value.clear();
                Ok(pb::PutResponse { entry: Some(entry) })
            }
            .await,
        )
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let pb::GetRequest { namespace, key } = request.into_inner();
        let rpc = Rpc::on_namespace(&namespace)?;
        rpc.unary(
            async {
                let found = self.kv.get(namespace, key).await?;
                Ok(pb::GetResponse {
                    entry: Some(found.into()),
                })
            }
            .await,
        )
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let pb::DeleteRequest {
            namespace,
            key,
            if_version,
        } = request.into_inner();
        let rpc = Rpc::on_namespace(&namespace)?;
        rpc.unary(
            async {
                let deleted = self.kv.delete(namespace, key, if_version).await?;
                Ok(pb::DeleteResponse { deleted })
            }
            .await,
        )
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = request.into_inner();
        let rpc = Rpc::on_namespace(&r.namespace)?;
        rpc.unary(
            async {
                let page = self.kv.list(ListParams::from(r)).await?;
                Ok(pb::ListResponse {
                    entries: page.items.into_iter().map(Into::into).collect(),
                    next_page_token: page.next_page_token,
                })
            }
            .await,
        )
    }

    async fn create_collection(
        &self,
        request: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CreateCollectionResponse>, Status> {
        let r = request.into_inner();
        let rpc = Rpc::on_collection(&r.name)?;
        rpc.unary(
            async {
                let created = self.collections.create(CreateParams::try_from(r)?).await?;
                Ok(pb::CreateCollectionResponse {
                    collection: Some(created.into()),
                })
            }
            .await,
        )
    }

    async fn get_collection(
        &self,
        request: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::GetCollectionResponse>, Status> {
        let pb::GetCollectionRequest { name } = request.into_inner();
        let rpc = Rpc::on_collection(&name)?;
        rpc.unary(
            async {
                let found = self.collections.get(name).await?;
                Ok(pb::GetCollectionResponse {
                    collection: Some(found.into()),
                })
            }
            .await,
        )
    }

    async fn list_collections(
        &self,
        request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let pb::ListCollectionsRequest {
            page_size,
            page_token,
        } = request.into_inner();
        let rpc = Rpc::begin();
        // A key limited to some namespaces sees only the collections it may
        // touch (a page may then hold fewer than page_size).
        let caller = rpc.caller();
        rpc.unary(
            async {
                let page = self
                    .collections
                    .list(page_size as usize, page_token)
                    .await?;
                Ok(pb::ListCollectionsResponse {
                    collections: page
                        .items
                        .into_iter()
                        .filter(|c| caller.may_touch(&c.def.name))
                        .map(Into::into)
                        .collect(),
                    next_page_token: page.next_page_token,
                })
            }
            .await,
        )
    }

    async fn delete_collection(
        &self,
        request: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        let pb::DeleteCollectionRequest { name } = request.into_inner();
        let rpc = Rpc::on_collection(&name)?;
        rpc.unary(
            async {
                let deleted = self.points.delete_collection(name).await?;
                Ok(pb::DeleteCollectionResponse { deleted })
            }
            .await,
        )
    }

    async fn collection_stats(
        &self,
        request: Request<pb::CollectionStatsRequest>,
    ) -> Result<Response<pb::CollectionStatsResponse>, Status> {
        let pb::CollectionStatsRequest { name } = request.into_inner();
        let rpc = Rpc::on_collection(&name)?;
        rpc.unary(async { Ok(self.points.stats(name).await?.into()) }.await)
    }

    async fn upsert(
        &self,
        request: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        let pb::UpsertRequest { collection, points } = request.into_inner();
        let rpc = Rpc::on_collection(&collection)?;
        rpc.unary(
            async {
                let points = points_from(points)?;
                Ok(self.points.upsert(collection, points).await?.into())
            }
            .await,
        )
    }

    async fn upsert_stream(
        &self,
        request: Request<Streaming<pb::UpsertStreamRequest>>,
    ) -> Result<Response<pb::UpsertStreamResponse>, Status> {
        let mut stream = request.into_inner();
        let rpc = Rpc::begin();
        let mut totals = pb::UpsertStreamResponse::default();
        let mut collection: Option<String> = None;
        let mut received = 0u64;
        // The batch being committed while the next message is read and
        // decoded: at most two batches in memory whatever the stream length,
        // and flow control slows a sender that outpaces the commits.
        let mut committing: Option<BatchCommit> = None;
        let result = async {
            loop {
                let (committed, next) = match committing.take() {
                    Some(commit) => {
                        let (committed, next) = tokio::join!(commit, stream.message());
                        (Some(committed), next)
                    }
                    None => (None, stream.message().await),
                };
                // A failed batch wins over anything read after it.
                if let Some(committed) = committed {
                    let (count, outcome) = committed?;
                    totals.points_merged += outcome.merged();
                    totals.points_upserted += count;
                    totals.batches_committed += 1;
                    totals.sequence = outcome.sequence;
                }
                let Some(message) = next? else {
                    break;
                };
                let n = received;
                received += 1;
                // Errors name the stream message they are about, so a client
                // knows which batches before it were committed.
                let within = move |e: Error| e.within(&format!("messages[{n}]"));
                let pb::UpsertStreamRequest {
                    collection: name,
                    points,
                } = message;
                let name = match &collection {
                    None if name.is_empty() => {
                        return Err(within(Error::invalid(
                            "collection",
                            "is required in the first message",
                        ))
                        .into());
                    }
                    None => {
                        // Checked before the first batch is committed.
                        rpc.record_collection(&name)?;
                        collection.insert(name).clone()
                    }
                    Some(first) if name.is_empty() || &name == first => first.clone(),
                    Some(first) => {
                        return Err(within(Error::invalid(
                            "collection",
                            format!("is {name:?}, but this stream writes to {first:?}"),
                        ))
                        .into());
                    }
                };
                let points = points_from(points).map_err(within)?;
                let engine = self.points.clone();
                committing = Some(Box::pin(async move {
                    let count = points.len() as u64;
                    let outcome = engine.upsert(name, points).await.map_err(within)?;
                    Ok((count, outcome))
                }));
            }
            if collection.is_none() {
                return Err(Error::invalid("messages", "the stream sent no message").into());
            }
            Ok(totals)
        }
        .await;
        if let Some(name) = &collection {
            rpc.record_resource("collection", name);
        }
        rpc.unary(result)
    }

    async fn get_points(
        &self,
        request: Request<pb::GetPointsRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        let pb::GetPointsRequest {
            collection,
            ids,
            with_payload,
            with_vector,
        } = request.into_inner();
        let rpc = Rpc::on_collection(&collection)?;
        rpc.unary(
            async {
                let include = Include {
                    payload: with_payload,
                    vector: with_vector,
                };
                let found = self.points.get(collection, ids, include).await?;
                Ok(pb::GetPointsResponse {
                    points: found.into_iter().map(Into::into).collect(),
                })
            }
            .await,
        )
    }

    async fn delete_points(
        &self,
        request: Request<pb::DeletePointsRequest>,
    ) -> Result<Response<pb::DeletePointsResponse>, Status> {
        let pb::DeletePointsRequest {
            collection,
            selector,
        } = request.into_inner();
        let rpc = Rpc::on_collection(&collection)?;
        rpc.unary(
            async {
                let selector = Selector::try_from(selector)?;
                Ok(self.points.delete(collection, selector).await?.into())
            }
            .await,
        )
    }

    async fn count(
        &self,
        request: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let pb::CountRequest { collection, filter } = request.into_inner();
        let rpc = Rpc::on_collection(&collection)?;
        rpc.unary(
            async {
                let count = self.points.count(collection, filter_from(filter)?).await?;
                Ok(pb::CountResponse { count })
            }
            .await,
        )
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let received = Instant::now();
        let r = request.into_inner();
        let rpc = Rpc::on_collection(&r.collection)?;
        rpc.unary(
            async {
                let found = self.points.search(SearchParams::try_from(r)?).await?;
                Ok(search_response(found, received))
            }
            .await,
        )
    }

    async fn search_batch(
        &self,
        request: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let received = Instant::now();
        let pb::SearchBatchRequest {
            collection,
            searches,
        } = request.into_inner();
        let rpc = Rpc::on_collection(&collection)?;
        rpc.unary(
            async {
                let searches = searches
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| {
                        SearchParams::try_from(s).map_err(|e| e.within(&format!("searches[{i}]")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let found = self.points.search_batch(collection, searches).await?;
                Ok(pb::SearchBatchResponse {
                    results: found
                        .into_iter()
                        .map(|r| search_response(r, received))
                        .collect(),
                })
            }
            .await,
        )
    }
}
