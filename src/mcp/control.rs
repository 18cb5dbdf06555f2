//! Control tools.

use rmcp::tool_router;

use super::OmniMcp;

#[tool_router(router = control_tools, allow_empty, vis = "pub(super)")]
impl OmniMcp {}
