-- The activity log's indexes hold only the events that name what they
-- index: most events name an agent or a task, few a swarm, and every index
-- row costs each write (a Spawn of 1,000 agents writes 1,000 events). The
-- filtered reads (ListEvents, WatchEvents, ListAgents by swarm) repeat the
-- index's condition so that SQLite uses it.
DROP INDEX agent_events_by_agent;
DROP INDEX agent_events_by_task;
DROP INDEX agent_events_by_swarm;
CREATE INDEX agent_events_by_agent ON agent_events (agent_id, id) WHERE agent_id <> '';
CREATE INDEX agent_events_by_task ON agent_events (task_id, id) WHERE task_id <> '';
CREATE INDEX agent_events_by_swarm ON agent_events (swarm_id, id) WHERE swarm_id <> '';

DROP INDEX agents_by_swarm;
CREATE INDEX agents_by_swarm ON agents (swarm_id, seq) WHERE swarm_id <> '';
