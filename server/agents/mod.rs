//! The agents engine: specs, agents, swarms, tasks, external workers and the
//! activity log.
//!
//! Planned shape: everything persisted in the store; tasks run as query
//! sessions on an agent's model or are leased to external workers attached
//! through `Work`, reassigned when their heartbeats stop. Until it lands,
//! `agentd.v1.AgentService` answers UNIMPLEMENTED.
