//! The query engine: LLM query sessions that pause, resume and switch model
//! mid-answer without losing a token.
//!
//! Planned shape (issue #5): a session state machine whose transcript of
//! numbered deltas is the truth, `ModelProvider`s (local GGUF via candle,
//! OpenAI-compatible, Anthropic), a router with fallback chains and rules,
//! and exact and semantic result caches. Until it lands,
//! `agentd.v1.QueryControlService` answers UNIMPLEMENTED.
