//! `agentd.v1` swarm messages ⇄ the agents engine's swarm types.

use super::timestamp;
use crate::agents::{Routing, Swarm, SwarmBody, SwarmParams, SwarmState, Topology};
use crate::error::{Error, Result};
use crate::pb::v1 as pb;

impl TryFrom<pb::CreateSwarmRequest> for SwarmParams {
    type Error = Error;

    fn try_from(r: pb::CreateSwarmRequest) -> Result<Self> {
        let pb::CreateSwarmRequest {
            name,
            topology,
            max_agents,
            strategy,
            member_ids,
            labels,
            idempotency_key,
            max_rounds,
        } = r;
        let topology = match pb::SwarmTopology::try_from(topology) {
            Ok(pb::SwarmTopology::Unspecified) => None,
            Ok(pb::SwarmTopology::Hierarchical) => Some(Topology::Hierarchical),
            Ok(pb::SwarmTopology::Mesh) => Some(Topology::Mesh),
            Ok(pb::SwarmTopology::Ring) => Some(Topology::Ring),
            Ok(pb::SwarmTopology::Star) => Some(Topology::Star),
            Err(_) => {
                return Err(Error::invalid(
                    "topology",
                    format!("unknown topology {topology}"),
                ));
            }
        };
        let routing = match pb::SwarmStrategy::try_from(strategy) {
            Ok(pb::SwarmStrategy::Unspecified | pb::SwarmStrategy::LeastBusy) => Routing::LeastBusy,
            Ok(pb::SwarmStrategy::RoundRobin) => Routing::RoundRobin,
            Ok(pb::SwarmStrategy::CapabilityMatch) => Routing::CapabilityMatch,
            Err(_) => {
                return Err(Error::invalid(
                    "strategy",
                    format!("unknown swarm strategy {strategy}"),
                ));
            }
        };
        Ok(SwarmParams {
            name,
            topology,
            max_agents,
            routing,
            member_ids,
            labels: labels.into_iter().collect(),
            idempotency_key,
            max_rounds,
        })
    }
}

impl From<Swarm> for pb::Swarm {
    fn from(s: Swarm) -> Self {
        let Swarm {
            id,
            state,
            created_at_ms,
            body,
        } = s;
        let SwarmBody {
            name,
            topology,
            max_agents,
            routing,
            members,
            labels,
            max_rounds,
        } = body;
        pb::Swarm {
            id,
            name,
            topology: match topology {
                Topology::Hierarchical => pb::SwarmTopology::Hierarchical,
                Topology::Mesh => pb::SwarmTopology::Mesh,
                Topology::Ring => pb::SwarmTopology::Ring,
                Topology::Star => pb::SwarmTopology::Star,
            }
            .into(),
            max_agents,
            strategy: match routing {
                Routing::RoundRobin => pb::SwarmStrategy::RoundRobin,
                Routing::LeastBusy => pb::SwarmStrategy::LeastBusy,
                Routing::CapabilityMatch => pb::SwarmStrategy::CapabilityMatch,
            }
            .into(),
            member_ids: members,
            state: match state {
                SwarmState::Active => pb::SwarmState::Active,
                SwarmState::Dissolved => pb::SwarmState::Dissolved,
            }
            .into(),
            created_at: Some(timestamp(created_at_ms)),
            labels: labels.into_iter().collect(),
            max_rounds,
        }
    }
}
