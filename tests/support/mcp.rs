//! MCP test client: rmcp's client over streamable HTTP (`/mcp` of an in-process gateway) or
//! stdio (`omniroute mcp`), and a check of each tool's structured output against the output
//! schema the tool declares (the subset of JSON Schema that schemars emits: `type`,
//! `properties`, `required`, `items`, `enum`, `const`, `$ref` into `$defs`, `anyOf`/`oneOf`,
//! `additionalProperties`).

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Map, Value};

use super::Gateway;

pub struct Mcp {
    pub client: RunningService<RoleClient, ()>,
    pub tools: Vec<Tool>,
}

impl Mcp {
    /// Connects to the gateway's `/mcp`, with `key` as the bearer token when given.
    pub async fn connect(gw: &Gateway, key: Option<&str>) -> Mcp {
        Mcp::over_http(&format!("{}/mcp", gw.url), key).await
    }

    pub async fn over_http(url: &str, key: Option<&str>) -> Mcp {
        let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.to_string());
        if let Some(k) = key {
            cfg = cfg.auth_header(k);
        }
        let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), cfg);
        Mcp::with(().serve(transport).await.unwrap()).await
    }

    /// `omniroute mcp --data-dir dir [--key key]`, started as an agent starts it.
    pub async fn stdio(dir: &std::path::Path, key: Option<&str>) -> Mcp {
        let mut cmd = tokio::process::Command::new(super::cli::bin());
        cmd.args(["mcp", "--data-dir"]).arg(dir);
        cmd.env_remove("OMNIROUTE_API_KEY");
        if let Some(k) = key {
            cmd.args(["--key", k]);
        }
        let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Mcp::with(().serve(transport).await.unwrap()).await
    }

    pub async fn with(client: RunningService<RoleClient, ()>) -> Mcp {
        let tools = client.list_all_tools().await.unwrap();
        Mcp { client, tools }
    }

    pub fn tool(&self, name: &str) -> &Tool {
        self.tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} is not listed"))
    }

    /// Calls a tool (`args` must be a JSON object).
    pub async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        let Value::Object(args) = args else {
            panic!("arguments must be an object")
        };
        self.client
            .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
            .await
            .unwrap()
    }

    /// The structured output of a call that must succeed, checked against the tool's declared
    /// output schema.
    pub async fn ok(&self, tool: &str, args: Value) -> Value {
        let r = self.call(tool, args).await;
        let out = output(&r);
        let schema = self
            .tool(tool)
            .output_schema
            .as_ref()
            .unwrap_or_else(|| panic!("{tool} declares no output schema"));
        let schema = Value::Object((**schema).clone());
        if let Err(e) = conforms(&out, &schema, &schema, "$") {
            panic!("{tool}: the output does not match its schema: {e}\noutput: {out}");
        }
        out
    }

    /// The error text of a call that must fail as a tool error.
    pub async fn err(&self, tool: &str, args: Value) -> String {
        error_text(&self.call(tool, args).await)
    }

    pub async fn close(self) {
        self.client.cancel().await.unwrap();
    }
}

/// The structured output of a successful call.
pub fn output(r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "{r:?}");
    r.structured_content.clone().expect("structured content")
}

/// The text of a tool error.
pub fn error_text(r: &CallToolResult) -> String {
    assert_eq!(r.is_error, Some(true), "{r:?}");
    serde_json::to_string(&r.content).unwrap()
}

/// Whether `v` conforms to `schema` (`root` holds the `$defs`); the error names the path.
pub fn conforms(v: &Value, schema: &Value, root: &Value, path: &str) -> Result<(), String> {
    let s = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(format!("{path}: nothing is allowed here")),
        Value::Object(s) => s,
        _ => return Err(format!("{path}: the schema is not an object")),
    };
    if let Some(Value::String(r)) = s.get("$ref") {
        let name = r.rsplit('/').next().unwrap_or("");
        let def = root
            .get("$defs")
            .or_else(|| root.get("definitions"))
            .and_then(|d| d.get(name))
            .ok_or_else(|| format!("{path}: unresolved {r}"))?;
        conforms(v, def, root, path)?;
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alts)) = s.get(key) {
            let n = alts
                .iter()
                .filter(|a| conforms(v, a, root, path).is_ok())
                .count();
            if n == 0 || (key == "oneOf" && n > 1) {
                return Err(format!("{path}: {n} alternatives of {key} match {v}"));
            }
        }
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        for a in all {
            conforms(v, a, root, path)?;
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.iter().any(|t| is_type(v, t)) {
            return Err(format!("{path}: {v} is not of type {t}"));
        }
    }
    if let Some(Value::Array(e)) = s.get("enum")
        && !e.contains(v)
    {
        return Err(format!("{path}: {v} is not one of {e:?}"));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        return Err(format!("{path}: {v} is not {c}"));
    }
    if let Value::Object(o) = v {
        object(o, s, root, path)?;
    }
    if let (Value::Array(items), Some(item)) = (v, s.get("items")) {
        for (i, x) in items.iter().enumerate() {
            conforms(x, item, root, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

fn object(
    o: &Map<String, Value>,
    s: &Map<String, Value>,
    root: &Value,
    path: &str,
) -> Result<(), String> {
    let empty = Map::new();
    let props = s
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if let Some(Value::Array(req)) = s.get("required") {
        for r in req.iter().filter_map(Value::as_str) {
            if !o.contains_key(r) {
                return Err(format!("{path}: the required field {r:?} is missing"));
            }
        }
    }
    for (k, x) in o {
        let p = format!("{path}.{k}");
        match props.get(k) {
            Some(ps) => conforms(x, ps, root, &p)?,
            None => match s.get("additionalProperties") {
                Some(Value::Bool(false)) => return Err(format!("{p}: not in the schema")),
                Some(ap @ Value::Object(_)) => conforms(x, ap, root, &p)?,
                _ => {}
            },
        }
    }
    Ok(())
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}
