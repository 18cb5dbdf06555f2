//! Control operations: writes to routing, budgets and resilience, each recorded in the log and
//! durable before it is acknowledged.
