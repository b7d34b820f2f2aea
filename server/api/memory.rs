//! `agentd.v1.MemoryService`: validate, convert, call the memory engine,
//! convert back.
//!
//! Every RPC is served: key-value memory, collections (with their stats),
//! points (Upsert, UpsertStream, GetPoints, DeletePoints, Count) and search.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::{Request, Response, Status, Streaming};

use super::convert::{json_object, json_value, proto_struct, timestamp};
use crate::error::{Error, FieldViolation};
use crate::memory::collections::{IndexSpec, Metric, Quantization};
use crate::memory::filter::{Condition, Filter as DomainFilter, Range as DomainRange};
use crate::memory::points::{
    Hit, PointData, PointInput as DomainPointInput, Points, Query, SearchParams, Selector,
    UpsertStatus as DomainStatus, Upserted,
};
use crate::memory::{
    Collection as DomainCollection, Collections, CreateParams, KvMemory, ListParams, PutParams,
};
use crate::pb::v1::memory_service_server::MemoryService;
use crate::pb::v1::*;
use crate::store::KvEntry;

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

/// A protobuf filter as a domain filter; `path` names it in errors.
fn filter_from(f: Filter, path: &str) -> Result<DomainFilter, Error> {
    use crate::pb::v1::field_condition::Condition as C;
    use crate::pb::v1::filter::Kind as K;
    let list = |l: FilterList, name: &str| -> Result<Vec<DomainFilter>, Error> {
        l.filters
            .into_iter()
            .enumerate()
            .map(|(i, f)| filter_from(f, &format!("{path}.{name}.filters[{i}]")))
            .collect()
    };
    Ok(match f.kind {
        None => {
            return Err(Error::invalid(
                path,
                "is empty: set field, all_of, any_of or none_of",
            ));
        }
        Some(K::AllOf(l)) => DomainFilter::AllOf(list(l, "all_of")?),
        Some(K::AnyOf(l)) => DomainFilter::AnyOf(list(l, "any_of")?),
        Some(K::NoneOf(l)) => DomainFilter::NoneOf(list(l, "none_of")?),
        Some(K::Field(field)) => {
            let at = format!("{path}.field");
            let condition = match field.condition {
                None => return Err(Error::invalid(&at, "needs eq, in_values, range or exists")),
                Some(C::Eq(v)) => Condition::Eq(json_value(v, &format!("{at}.eq"))?),
                Some(C::InValues(l)) => Condition::In(
                    l.values
                        .into_iter()
                        .map(|v| json_value(v, &format!("{at}.in_values")))
                        .collect::<Result<_, _>>()?,
                ),
                Some(C::Range(r)) => Condition::Range(DomainRange {
                    gt: r.gt,
                    gte: r.gte,
                    lt: r.lt,
                    lte: r.lte,
                }),
                Some(C::Exists(e)) => Condition::Exists(e),
            };
            DomainFilter::Field {
                key: field.key,
                condition,
            }
        }
    })
}

/// One UpsertStream batch on its way to the store: (points, outcome, sequence).
type BatchCommit =
    std::pin::Pin<Box<dyn Future<Output = Result<(u64, Vec<Upserted>, u64), Error>> + Send>>;

/// Names the stream message a domain error is about, so a client knows
/// which batches before it were committed.
fn in_message(n: u64, e: Error) -> Error {
    match e {
        Error::InvalidArgument(violations) => Error::InvalidArgument(
            violations
                .into_iter()
                .map(|v| FieldViolation::new(format!("messages[{n}].{}", v.field), v.description))
                .collect(),
        ),
        other => other,
    }
}

fn upsert_result(u: Upserted) -> UpsertResult {
    let (status, merged_into) = match u.status {
        DomainStatus::Created => (UpsertStatus::Created, String::new()),
        DomainStatus::Updated => (UpsertStatus::Updated, String::new()),
        DomainStatus::Merged(into) => (UpsertStatus::Merged, into),
    };
    UpsertResult {
        id: u.id,
        status: status.into(),
        merged_into,
    }
}

fn search_params(r: SearchRequest, collection: String) -> Result<SearchParams, Error> {
    use crate::pb::v1::search_request::Query as Q;
    Ok(SearchParams {
        collection,
        query: r.query.map(|q| match q {
            Q::Vector(v) => Query::Vector(v.values),
            Q::Text(t) => Query::Text(t),
        }),
        k: r.k as usize,
        filter: r.filter.map(|f| filter_from(f, "filter")).transpose()?,
        ef_search: r.ef_search,
        nprobe: r.nprobe,
        score_threshold: r.score_threshold,
        with_payload: r.with_payload,
        with_vector: r.with_vector,
    })
}

fn search_response(hits: Vec<Hit>, with_payload: bool, with_vector: bool) -> SearchResponse {
    SearchResponse {
        results: hits
            .into_iter()
            .map(|h| ScoredPoint {
                id: h.point.id,
                score: h.score,
                payload: with_payload.then(|| proto_struct(h.point.payload)),
                vector: with_vector.then_some(Vector {
                    values: h.point.vector,
                }),
            })
            .collect(),
        cached: false,
        timing: None,
    }
}

fn point_input(p: crate::pb::v1::PointInput, i: usize) -> Result<DomainPointInput, Error> {
    use crate::pb::v1::point_input::Data;
    Ok(DomainPointInput {
        id: p.id,
        data: p.data.map(|d| match d {
            Data::Vector(v) => PointData::Vector(v.values),
            Data::Text(t) => PointData::Text(t),
        }),
        payload: match p.payload {
            Some(s) => json_object(s, &format!("points[{i}].payload"))?,
            None => serde_json::Map::new(),
        },
    })
}

fn metric_from(m: i32) -> Option<Metric> {
    match crate::pb::v1::Metric::try_from(m).ok()? {
        crate::pb::v1::Metric::Cosine => Some(Metric::Cosine),
        crate::pb::v1::Metric::Dot => Some(Metric::Dot),
        crate::pb::v1::Metric::L2 => Some(Metric::L2),
        crate::pb::v1::Metric::Unspecified => None,
    }
}

fn index_from(spec: Option<crate::pb::v1::IndexSpec>) -> Option<IndexSpec> {
    use crate::pb::v1::index_spec::Kind;
    Some(match spec?.kind? {
        Kind::Flat(_) => IndexSpec::Flat,
        Kind::Hnsw(h) => IndexSpec::Hnsw {
            m: h.m,
            ef_construction: h.ef_construction,
            ef_search: h.ef_search,
        },
        Kind::Ivf(i) => IndexSpec::Ivf {
            nlist: i.nlist,
            nprobe: i.nprobe,
        },
    })
}

fn quantization_from(
    q: Option<crate::pb::v1::Quantization>,
) -> Result<Option<Quantization>, Error> {
    let Some(q) = q else { return Ok(None) };
    Ok(Some(match QuantizationType::try_from(q.r#type) {
        Ok(QuantizationType::Unspecified | QuantizationType::None) => Quantization::None,
        Ok(QuantizationType::Sq8) => Quantization::Sq8,
        Ok(QuantizationType::Sq4) => Quantization::Sq4,
        Ok(QuantizationType::Pq) => Quantization::Pq {
            subquantizers: q.pq_subquantizers,
            bits: q.pq_bits,
        },
        Err(_) => {
            return Err(Error::invalid(
                "quantization.type",
                format!("unknown value {}", q.r#type),
            ));
        }
    }))
}

fn collection(c: DomainCollection) -> crate::pb::v1::Collection {
    use crate::pb::v1::index_spec::Kind;
    let def = c.def;
    let metric = match def.metric {
        Metric::Cosine => crate::pb::v1::Metric::Cosine,
        Metric::Dot => crate::pb::v1::Metric::Dot,
        Metric::L2 => crate::pb::v1::Metric::L2,
    };
    let kind = match def.index {
        IndexSpec::Flat => Kind::Flat(FlatIndex {}),
        IndexSpec::Hnsw {
            m,
            ef_construction,
            ef_search,
        } => Kind::Hnsw(HnswIndex {
            m,
            ef_construction,
            ef_search,
        }),
        IndexSpec::Ivf { nlist, nprobe } => Kind::Ivf(IvfIndex { nlist, nprobe }),
    };
    let (r#type, pq_subquantizers, pq_bits) = match def.quantization {
        Quantization::None => (QuantizationType::None, 0, 0),
        Quantization::Sq8 => (QuantizationType::Sq8, 0, 0),
        Quantization::Sq4 => (QuantizationType::Sq4, 0, 0),
        Quantization::Pq {
            subquantizers,
            bits,
        } => (QuantizationType::Pq, subquantizers, bits),
    };
    crate::pb::v1::Collection {
        name: def.name,
        dimensions: def.dimensions,
        metric: metric.into(),
        index: Some(crate::pb::v1::IndexSpec { kind: Some(kind) }),
        quantization: Some(crate::pb::v1::Quantization {
            r#type: r#type.into(),
            pq_subquantizers,
            pq_bits,
        }),
        embedding_model: def.embedding_model.unwrap_or_default(),
        dedup_threshold: def.dedup_threshold,
        points_count: c.points_count,
        created_at: Some(timestamp(c.created_at)),
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
        request: Request<CreateCollectionRequest>,
    ) -> Result<Response<CreateCollectionResponse>, Status> {
        let r = request.into_inner();
        let created = self
            .collections
            .create(CreateParams {
                name: r.name,
                dimensions: r.dimensions,
                metric: metric_from(r.metric),
                index: index_from(r.index),
                quantization: quantization_from(r.quantization)?,
                embedding_model: r.embedding_model,
                dedup_threshold: r.dedup_threshold,
            })
            .await?;
        Ok(Response::new(CreateCollectionResponse {
            collection: Some(collection(created)),
        }))
    }

    async fn get_collection(
        &self,
        request: Request<GetCollectionRequest>,
    ) -> Result<Response<GetCollectionResponse>, Status> {
        let found = self.collections.get(request.into_inner().name).await?;
        Ok(Response::new(GetCollectionResponse {
            collection: Some(collection(found)),
        }))
    }

    async fn list_collections(
        &self,
        request: Request<ListCollectionsRequest>,
    ) -> Result<Response<ListCollectionsResponse>, Status> {
        let r = request.into_inner();
        let (found, next_page_token) = self
            .collections
            .list(r.page_size as usize, r.page_token)
            .await?;
        Ok(Response::new(ListCollectionsResponse {
            collections: found.into_iter().map(collection).collect(),
            next_page_token,
        }))
    }

    async fn delete_collection(
        &self,
        request: Request<DeleteCollectionRequest>,
    ) -> Result<Response<DeleteCollectionResponse>, Status> {
        let name = request.into_inner().name;
        let deleted = self.collections.delete(name.clone()).await?;
        self.points.forget(&name);
        Ok(Response::new(DeleteCollectionResponse { deleted }))
    }

    async fn collection_stats(
        &self,
        request: Request<CollectionStatsRequest>,
    ) -> Result<Response<CollectionStatsResponse>, Status> {
        let stats = self.points.stats(request.into_inner().name).await?;
        let searches = stats.cache_hits + stats.cache_misses;
        Ok(Response::new(CollectionStatsResponse {
            points_count: stats.points,
            deleted_not_compacted: stats.index.dead,
            disk_bytes: stats.disk_bytes,
            index_memory_bytes: stats.index.memory_bytes,
            cache_hits: stats.cache_hits,
            cache_misses: stats.cache_misses,
            cache_hit_rate: if searches == 0 {
                0.0
            } else {
                stats.cache_hits as f64 / searches as f64
            },
            last_applied_sequence: stats.index.applied_seq,
            rebuilding: stats.index.rebuilding,
            last_snapshot_sequence: stats.index.snapshot_seq,
        }))
    }

    async fn upsert(
        &self,
        request: Request<UpsertRequest>,
    ) -> Result<Response<UpsertResponse>, Status> {
        let r = request.into_inner();
        let points = r
            .points
            .into_iter()
            .enumerate()
            .map(|(i, p)| point_input(p, i))
            .collect::<Result<Vec<_>, _>>()?;
        let (outcome, seq) = self.points.upsert(r.collection, points).await?;
        let results = outcome.into_iter().map(upsert_result).collect();
        Ok(Response::new(UpsertResponse {
            results,
            sequence: seq,
        }))
    }

    async fn upsert_stream(
        &self,
        request: Request<Streaming<UpsertStreamRequest>>,
    ) -> Result<Response<UpsertStreamResponse>, Status> {
        let mut stream = request.into_inner();
        let mut totals = UpsertStreamResponse::default();
        let mut collection: Option<String> = None;
        let mut received = 0u64;
        // The batch being committed while the next message is read and
        // decoded: at most two batches in memory whatever the stream length,
        // and flow control slows a sender that outpaces the commits.
        let mut committing: Option<BatchCommit> = None;
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
                let (count, outcome, seq) = committed?;
                totals.points_merged += outcome
                    .iter()
                    .filter(|u| matches!(u.status, DomainStatus::Merged(_)))
                    .count() as u64;
                totals.points_upserted += count;
                totals.batches_committed += 1;
                totals.sequence = seq;
            }
            let Some(message) = next? else {
                break;
            };
            let n = received;
            received += 1;
            let in_message = move |e: Error| in_message(n, e);
            let name = match (&collection, message.collection) {
                (None, name) if name.is_empty() => {
                    return Err(in_message(Error::invalid(
                        "collection",
                        "is required in the first message",
                    ))
                    .into());
                }
                (None, name) => collection.insert(name).clone(),
                (Some(first), name) if name.is_empty() || &name == first => first.clone(),
                (Some(first), name) => {
                    return Err(in_message(Error::invalid(
                        "collection",
                        format!("is {name:?}, but this stream writes to {first:?}"),
                    ))
                    .into());
                }
            };
            let points = message
                .points
                .into_iter()
                .enumerate()
                .map(|(i, p)| point_input(p, i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(in_message)?;
            let engine = self.points.clone();
            committing = Some(Box::pin(async move {
                let count = points.len() as u64;
                let (outcome, seq) = engine.upsert(name, points).await.map_err(in_message)?;
                Ok((count, outcome, seq))
            }));
        }
        if collection.is_none() {
            return Err(Error::invalid("messages", "the stream sent no message").into());
        }
        Ok(Response::new(totals))
    }

    async fn get_points(
        &self,
        request: Request<GetPointsRequest>,
    ) -> Result<Response<GetPointsResponse>, Status> {
        let r = request.into_inner();
        let found = self.points.get(r.collection, r.ids).await?;
        let points = found
            .into_iter()
            .map(|p| Point {
                id: p.id,
                vector: r.with_vector.then_some(Vector { values: p.vector }),
                payload: r.with_payload.then(|| proto_struct(p.payload)),
            })
            .collect();
        Ok(Response::new(GetPointsResponse { points }))
    }

    async fn delete_points(
        &self,
        request: Request<DeletePointsRequest>,
    ) -> Result<Response<DeletePointsResponse>, Status> {
        use crate::pb::v1::delete_points_request::Selector as S;
        let r = request.into_inner();
        let selector = match r.selector {
            Some(S::Ids(ids)) => Selector::Ids(ids.ids),
            Some(S::Filter(f)) => Selector::Filter(filter_from(f, "filter")?),
            None => return Err(Error::invalid("selector", "set ids or filter").into()),
        };
        let (deleted, sequence) = self.points.delete(r.collection, selector).await?;
        Ok(Response::new(DeletePointsResponse { deleted, sequence }))
    }

    async fn count(
        &self,
        request: Request<CountRequest>,
    ) -> Result<Response<CountResponse>, Status> {
        let r = request.into_inner();
        let filter = r.filter.map(|f| filter_from(f, "filter")).transpose()?;
        let count = self.points.count(r.collection, filter).await?;
        Ok(Response::new(CountResponse { count }))
    }

    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let r = request.into_inner();
        let (with_payload, with_vector) = (r.with_payload, r.with_vector);
        let collection = r.collection.clone();
        let hits = self.points.search(search_params(r, collection)?).await?;
        Ok(Response::new(search_response(
            hits,
            with_payload,
            with_vector,
        )))
    }

    async fn search_batch(
        &self,
        request: Request<SearchBatchRequest>,
    ) -> Result<Response<SearchBatchResponse>, Status> {
        let r = request.into_inner();
        if r.searches.is_empty() || r.searches.len() > 256 {
            return Err(Error::invalid(
                "searches",
                format!("must hold 1 to 256 searches, got {}", r.searches.len()),
            )
            .into());
        }
        let mut results = Vec::with_capacity(r.searches.len());
        for (i, search) in r.searches.into_iter().enumerate() {
            if !search.collection.is_empty() && search.collection != r.collection {
                return Err(Error::invalid(
                    format!("searches[{i}].collection"),
                    format!("must be empty or {:?}", r.collection),
                )
                .into());
            }
            let (with_payload, with_vector) = (search.with_payload, search.with_vector);
            let hits = self
                .points
                .search(search_params(search, r.collection.clone())?)
                .await?;
            results.push(search_response(hits, with_payload, with_vector));
        }
        Ok(Response::new(SearchBatchResponse { results }))
    }
}
