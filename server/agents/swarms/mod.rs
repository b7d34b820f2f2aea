//! Swarms: groups of agents that share tasks, with a topology that decides
//! what a task sent to the swarm becomes.
//!
//! - [`roster`]: CreateSwarm (members checked, idempotency key), GetSwarm,
//!   ListSwarms, DissolveSwarm (pending tasks cancelled, members freed or
//!   stopped), and joining at spawn.
//! - [`expand`]: a task sent to a swarm made into steps on its members —
//!   the task itself routed (MESH), a fan-out merged on the hub (STAR), a
//!   chain (RING, SEQUENTIAL), a join of every member's answer (PARALLEL),
//!   a plan on the coordinator whose subtasks become steps (HIERARCHICAL).
//!   Steps are ordinary tasks linked by dependencies (`tasks::graph`), so
//!   they persist, survive restarts and fail down the line like any graph.

pub(crate) mod expand;
pub(crate) mod roster;
