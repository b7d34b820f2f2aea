//! `agentd.v1` MemoryService messages ⇄ the memory engine's types.

use std::collections::BTreeMap;

use super::{duration_from, json_object, json_value, proto_struct, timestamp};
use crate::error::{Error, Result, Violations};
use crate::memory::{
    Collection, CollectionStats, Condition, CreateParams, Deleted, Entry, Filter, Hit, IndexSpec,
    ListParams, Metric, Point, PointData, PointInput, PutParams, Quantization, Query, Range,
    SearchParams, Selector, UpsertOutcome, UpsertStatus, Upserted,
};
use crate::pb::v1 as pb;

impl TryFrom<pb::PutRequest> for PutParams {
    type Error = Error;

    fn try_from(r: pb::PutRequest) -> Result<Self> {
        let pb::PutRequest {
            namespace,
            key,
            value,
            content_type,
            metadata,
            ttl,
            if_version,
        } = r;
        Ok(PutParams {
            namespace,
            key,
            value,
            content_type,
            metadata: metadata.into_iter().collect::<BTreeMap<_, _>>(),
            ttl: ttl.map(|d| duration_from(d, "ttl")).transpose()?,
            if_version,
        })
    }
}

impl From<pb::ListRequest> for ListParams {
    fn from(r: pb::ListRequest) -> Self {
        let pb::ListRequest {
            namespace,
            prefix,
            page_size,
            page_token,
            include_values,
        } = r;
        ListParams {
            namespace,
            prefix,
            page_size: page_size as usize,
            page_token,
            include_values,
        }
    }
}

impl From<Entry> for pb::MemoryEntry {
    fn from(e: Entry) -> Self {
        let Entry {
            namespace,
            key,
            value,
            content_type,
            metadata,
            version,
            created_at,
            updated_at,
            expires_at,
        } = e;
        pb::MemoryEntry {
            namespace,
            key,
            value,
            content_type,
            metadata: metadata.into_iter().collect(),
            version,
            created_at: Some(timestamp(created_at)),
            updated_at: Some(timestamp(updated_at)),
            expires_at: expires_at.map(timestamp),
        }
    }
}

/// A metric; UNSPECIFIED is none (the engine says it is required).
fn metric_from(m: i32) -> Result<Option<Metric>> {
    match pb::Metric::try_from(m) {
        Ok(pb::Metric::Unspecified) => Ok(None),
        Ok(pb::Metric::Cosine) => Ok(Some(Metric::Cosine)),
        Ok(pb::Metric::Dot) => Ok(Some(Metric::Dot)),
        Ok(pb::Metric::L2) => Ok(Some(Metric::L2)),
        Err(_) => Err(Error::invalid("metric", format!("unknown value {m}"))),
    }
}

impl From<Metric> for pb::Metric {
    fn from(m: Metric) -> Self {
        match m {
            Metric::Cosine => pb::Metric::Cosine,
            Metric::Dot => pb::Metric::Dot,
            Metric::L2 => pb::Metric::L2,
        }
    }
}

/// An index spec; an empty one is none (the engine's default).
fn index_from(spec: pb::IndexSpec) -> Option<IndexSpec> {
    use pb::index_spec::Kind;
    let pb::IndexSpec { kind } = spec;
    Some(match kind? {
        Kind::Flat(pb::FlatIndex {}) => IndexSpec::Flat,
        Kind::Hnsw(pb::HnswIndex {
            m,
            ef_construction,
            ef_search,
        }) => IndexSpec::Hnsw {
            m,
            ef_construction,
            ef_search,
        },
        Kind::Ivf(pb::IvfIndex { nlist, nprobe }) => IndexSpec::Ivf { nlist, nprobe },
    })
}

impl From<IndexSpec> for pb::IndexSpec {
    fn from(spec: IndexSpec) -> Self {
        use pb::index_spec::Kind;
        let kind = match spec {
            IndexSpec::Flat => Kind::Flat(pb::FlatIndex {}),
            IndexSpec::Hnsw {
                m,
                ef_construction,
                ef_search,
            } => Kind::Hnsw(pb::HnswIndex {
                m,
                ef_construction,
                ef_search,
            }),
            IndexSpec::Ivf { nlist, nprobe } => Kind::Ivf(pb::IvfIndex { nlist, nprobe }),
        };
        pb::IndexSpec { kind: Some(kind) }
    }
}

impl TryFrom<pb::Quantization> for Quantization {
    type Error = Error;

    fn try_from(q: pb::Quantization) -> Result<Self> {
        let pb::Quantization {
            r#type,
            pq_subquantizers,
            pq_bits,
        } = q;
        Ok(match pb::QuantizationType::try_from(r#type) {
            Ok(pb::QuantizationType::Unspecified | pb::QuantizationType::None) => {
                Quantization::None
            }
            Ok(pb::QuantizationType::Sq8) => Quantization::Sq8,
            Ok(pb::QuantizationType::Sq4) => Quantization::Sq4,
            Ok(pb::QuantizationType::Pq) => Quantization::Pq {
                subquantizers: pq_subquantizers,
                bits: pq_bits,
            },
            Err(_) => return Err(Error::invalid("type", format!("unknown value {type}"))),
        })
    }
}

impl From<Quantization> for pb::Quantization {
    fn from(q: Quantization) -> Self {
        let (kind, pq_subquantizers, pq_bits) = match q {
            Quantization::None => (pb::QuantizationType::None, 0, 0),
            Quantization::Sq8 => (pb::QuantizationType::Sq8, 0, 0),
            Quantization::Sq4 => (pb::QuantizationType::Sq4, 0, 0),
            Quantization::Pq {
                subquantizers,
                bits,
            } => (pb::QuantizationType::Pq, subquantizers, bits),
        };
        pb::Quantization {
            r#type: kind.into(),
            pq_subquantizers,
            pq_bits,
        }
    }
}

impl TryFrom<pb::CreateCollectionRequest> for CreateParams {
    type Error = Error;

    fn try_from(r: pb::CreateCollectionRequest) -> Result<Self> {
        let pb::CreateCollectionRequest {
            name,
            dimensions,
            metric,
            index,
            quantization,
            embedding_model,
            dedup_threshold,
        } = r;
        let mut v = Violations::new();
        let metric = metric_from(metric).or_else(|e| v.absorb(e).map(|()| None))?;
        let quantization = match quantization.map(Quantization::try_from).transpose() {
            Ok(q) => q,
            Err(e) => {
                v.absorb(e.within("quantization"))?;
                None
            }
        };
        v.finish()?;
        Ok(CreateParams {
            name,
            dimensions,
            metric,
            index: index.and_then(index_from),
            quantization,
            embedding_model,
            dedup_threshold,
        })
    }
}

impl From<Collection> for pb::Collection {
    fn from(c: Collection) -> Self {
        let Collection {
            def,
            created_at,
            points_count,
        } = c;
        let crate::memory::CollectionDef {
            name,
            dimensions,
            metric,
            index,
            quantization,
            embedding_model,
            dedup_threshold,
        } = def;
        pb::Collection {
            name,
            dimensions,
            metric: pb::Metric::from(metric).into(),
            index: Some(index.into()),
            quantization: Some(quantization.into()),
            embedding_model: embedding_model.unwrap_or_default(),
            dedup_threshold,
            points_count,
            created_at: Some(timestamp(created_at)),
        }
    }
}

impl From<CollectionStats> for pb::CollectionStatsResponse {
    fn from(stats: CollectionStats) -> Self {
        let cache_hit_rate = stats.cache_hit_rate();
        let CollectionStats {
            points,
            disk_bytes,
            cache_hits,
            cache_misses,
            index,
        } = stats;
        pb::CollectionStatsResponse {
            points_count: points,
            deleted_not_compacted: index.dead,
            disk_bytes,
            index_memory_bytes: index.memory_bytes,
            cache_hits,
            cache_misses,
            cache_hit_rate,
            last_applied_sequence: index.applied_seq,
            rebuilding: index.rebuilding,
            last_snapshot_sequence: index.snapshot_seq,
            fresh_points: index.fresh_points,
            indexed_points: index.indexed_points,
        }
    }
}

impl TryFrom<pb::PointInput> for PointInput {
    type Error = Error;

    fn try_from(p: pb::PointInput) -> Result<Self> {
        use pb::point_input::Data;
        let pb::PointInput { id, data, payload } = p;
        Ok(PointInput {
            id,
            data: data.map(|d| match d {
                Data::Vector(pb::Vector { values }) => PointData::Vector(values),
                Data::Text(t) => PointData::Text(t),
            }),
            payload: match payload {
                Some(s) => json_object(s, "payload")?,
                None => serde_json::Map::new(),
            },
        })
    }
}

/// The points of an Upsert or an UpsertStream message, each error named
/// by the point's index (`points[3].payload.x`).
pub fn points_from(points: Vec<pb::PointInput>) -> Result<Vec<PointInput>> {
    points
        .into_iter()
        .enumerate()
        .map(|(i, p)| PointInput::try_from(p).map_err(|e| e.within(&format!("points[{i}]"))))
        .collect()
}

impl From<Upserted> for pb::UpsertResult {
    fn from(u: Upserted) -> Self {
        let Upserted { id, status } = u;
        let (status, merged_into) = match status {
            UpsertStatus::Created => (pb::UpsertStatus::Created, String::new()),
            UpsertStatus::Updated => (pb::UpsertStatus::Updated, String::new()),
            UpsertStatus::Merged(into) => (pb::UpsertStatus::Merged, into),
        };
        pb::UpsertResult {
            id,
            status: status.into(),
            merged_into,
        }
    }
}

impl From<UpsertOutcome> for pb::UpsertResponse {
    fn from(o: UpsertOutcome) -> Self {
        let UpsertOutcome { results, sequence } = o;
        pb::UpsertResponse {
            results: results.into_iter().map(Into::into).collect(),
            sequence,
        }
    }
}

impl From<Point> for pb::Point {
    fn from(p: Point) -> Self {
        let Point {
            id,
            vector,
            payload,
        } = p;
        pb::Point {
            id,
            vector: vector.map(|values| pb::Vector { values }),
            payload: payload.map(proto_struct),
        }
    }
}

impl TryFrom<Option<pb::delete_points_request::Selector>> for Selector {
    type Error = Error;

    fn try_from(s: Option<pb::delete_points_request::Selector>) -> Result<Self> {
        use pb::delete_points_request::Selector as S;
        match s {
            Some(S::Ids(pb::PointIds { ids })) => Ok(Selector::Ids(ids)),
            Some(S::Filter(f)) => Ok(Selector::Filter(
                Filter::try_from(f).map_err(|e| e.within("filter"))?,
            )),
            None => Err(Error::invalid("selector", "set ids or filter")),
        }
    }
}

impl From<Deleted> for pb::DeletePointsResponse {
    fn from(d: Deleted) -> Self {
        let Deleted { count, sequence } = d;
        pb::DeletePointsResponse {
            deleted: count,
            sequence,
        }
    }
}

impl TryFrom<pb::Filter> for Filter {
    type Error = Error;

    /// Paths are relative to the filter (`all_of.filters[1].field.eq`).
    fn try_from(f: pb::Filter) -> Result<Self> {
        use pb::filter::Kind as K;
        let list = |l: pb::FilterList, name: &str| -> Result<Vec<Filter>> {
            let pb::FilterList { filters } = l;
            filters
                .into_iter()
                .enumerate()
                .map(|(i, f)| {
                    Filter::try_from(f).map_err(|e| e.within(&format!("{name}.filters[{i}]")))
                })
                .collect()
        };
        let pb::Filter { kind } = f;
        Ok(match kind {
            None => {
                return Err(Error::invalid(
                    "",
                    "is empty: set field, all_of, any_of or none_of",
                ));
            }
            Some(K::AllOf(l)) => Filter::AllOf(list(l, "all_of")?),
            Some(K::AnyOf(l)) => Filter::AnyOf(list(l, "any_of")?),
            Some(K::NoneOf(l)) => Filter::NoneOf(list(l, "none_of")?),
            Some(K::Field(field)) => Filter::try_from(field).map_err(|e| e.within("field"))?,
        })
    }
}

impl TryFrom<pb::FieldCondition> for Filter {
    type Error = Error;

    fn try_from(f: pb::FieldCondition) -> Result<Self> {
        use pb::field_condition::Condition as C;
        let pb::FieldCondition { key, condition } = f;
        let condition = match condition {
            None => return Err(Error::invalid("", "needs eq, in_values, range or exists")),
            Some(C::Eq(v)) => Condition::Eq(json_value(v, "eq")?),
            Some(C::InValues(prost_types::ListValue { values })) => Condition::In(
                values
                    .into_iter()
                    .map(|v| json_value(v, "in_values"))
                    .collect::<Result<_>>()?,
            ),
            Some(C::Range(r)) => Condition::Range(r.into()),
            Some(C::Exists(e)) => Condition::Exists(e),
        };
        Ok(Filter::Field { key, condition })
    }
}

impl From<pb::Range> for Range {
    fn from(r: pb::Range) -> Self {
        let pb::Range { gt, gte, lt, lte } = r;
        Range { gt, gte, lt, lte }
    }
}

impl TryFrom<pb::SearchRequest> for SearchParams {
    type Error = Error;

    fn try_from(r: pb::SearchRequest) -> Result<Self> {
        use pb::search_request::Query as Q;
        let pb::SearchRequest {
            collection,
            query,
            k,
            filter,
            ef_search,
            nprobe,
            with_payload,
            with_vector,
            score_threshold,
            rescore,
            oversampling,
        } = r;
        Ok(SearchParams {
            collection,
            query: query.map(|q| match q {
                Q::Vector(pb::Vector { values }) => Query::Vector(values),
                Q::Text(t) => Query::Text(t),
            }),
            k: k as usize,
            filter: filter
                .map(|f| Filter::try_from(f).map_err(|e| e.within("filter")))
                .transpose()?,
            ef_search,
            nprobe,
            score_threshold,
            with_payload,
            with_vector,
            rescore,
            oversampling,
        })
    }
}

impl From<Hit> for pb::ScoredPoint {
    fn from(h: Hit) -> Self {
        let Hit { point, score } = h;
        let Point {
            id,
            vector,
            payload,
        } = point;
        pb::ScoredPoint {
            id,
            score,
            payload: payload.map(proto_struct),
            vector: vector.map(|values| pb::Vector { values }),
        }
    }
}

/// A search's results, with the total time since the request arrived.
pub fn search_response(
    result: crate::memory::SearchResult,
    received: std::time::Instant,
) -> pb::SearchResponse {
    let crate::memory::SearchResult {
        hits,
        cached,
        timing,
    } = result;
    pb::SearchResponse {
        results: hits.into_iter().map(Into::into).collect(),
        cached,
        timing: Some(super::timing(timing, received)),
    }
}
