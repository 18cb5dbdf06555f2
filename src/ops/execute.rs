//! Execution operations: real and simulated completions through the engine.
