//! The graph file: the JSON circuit-tracer writes for its frontend and Neuronpedia's graph viewer
//! reads (`circuit_tracer/frontend/graph_models.py` and `utils/create_graph_files.py`, MIT licence:
//! field names, node ids and kinds as there), so a graph made here opens there.

use serde::{Deserialize, Serialize};

use super::graph::Graph;
use super::prune::Pruned;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphFile {
    /// What the graph is of.
    pub metadata: Metadata,
    /// The viewer's initial state.
    #[serde(rename = "qParams")]
    pub q_params: QParams,
    /// Kept nodes.
    pub nodes: Vec<Node>,
    /// Kept edges.
    pub links: Vec<Link>,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The graph's name.
    pub slug: String,
    /// Which transcoders ("custom-…" for a list).
    pub scan: String,
    /// The transcoders used, one per layer.
    pub transcoder_list: Vec<String>,
    /// The prompt's tokens as text.
    pub prompt_tokens: Vec<String>,
    /// The prompt.
    pub prompt: String,
    /// The node threshold pruning used.
    pub node_threshold: Option<f64>,
}

/// `qParams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(non_snake_case)]
pub struct QParams {
    /// Pinned node ids.
    pub pinnedIds: Vec<String>,
    /// Groups of node ids.
    pub supernodes: Vec<Vec<String>>,
    /// "both".
    pub linkType: String,
    /// Selected node id.
    pub clickedId: String,
    /// Subgraph positions.
    pub sg_pos: String,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(non_snake_case)]
pub struct Node {
    /// Unique id: `{layer}_{feature}_{pos}`, `0_{layer}_{pos}` (error), `E_{token}_{pos}`, `{L+1}_{token}_{pos}`.
    pub node_id: String,
    /// Feature id (error: −1; embedding: the position; logit: the token id).
    pub feature: i64,
    /// Layer as text ("E" for embeddings, `n_layers + 1` for logits).
    pub layer: String,
    /// Position.
    pub ctx_idx: usize,
    /// "cross layer transcoder", "mlp reconstruction error", "embedding" or "logit".
    pub feature_type: String,
    /// Logits: probability.
    pub token_prob: f64,
    /// The most probable logit.
    pub is_target_logit: bool,
    /// Always 0.
    pub run_idx: usize,
    /// Always 0.
    pub reverse_ctx_idx: usize,
    /// The viewer's id.
    pub jsNodeId: String,
    /// Label.
    pub clerp: String,
    /// Cumulative influence share (pruning's ranking).
    pub influence: Option<f64>,
    /// Feature activation.
    pub activation: Option<f64>,
}

/// One edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Source node id.
    pub source: String,
    /// Target node id.
    pub target: String,
    /// Edge weight.
    pub weight: f64,
}

/// What names the graph file carries besides the graph.
#[derive(Debug, Clone)]
pub struct GraphLabels<'a> {
    /// The graph's name.
    pub slug: &'a str,
    /// The prompt.
    pub prompt: &'a str,
    /// The prompt's tokens as text, one per position.
    pub prompt_tokens: &'a [String],
    /// The logit nodes' tokens as text.
    pub logit_tokens: &'a [String],
    /// The transcoders, one per layer.
    pub transcoders: &'a [String],
    /// The node threshold pruning used.
    pub node_threshold: f64,
}

/// Makes the circuit-tracer token display form (newline, tab, carriage return as arrows).
pub fn display_token(t: &str) -> String {
    t.replace('\n', "⏎").replace('\t', "→").replace('\r', "↵")
}

/// Builds the file from a graph and what pruning kept.
pub fn graph_file(g: &Graph, pruned: &Pruned, labels: &GraphLabels<'_>) -> GraphFile {
    let n = g.n_nodes();
    let n_pos = g.tokens.len();
    let (e0, t0, l0) = (g.error_start(), g.token_start(), g.logit_start());
    let mut nodes: Vec<Option<Node>> = vec![None; n];
    let blank = |node_id: String, js: String| Node {
        node_id,
        feature: 0,
        layer: String::new(),
        ctx_idx: 0,
        feature_type: String::new(),
        token_prob: 0.0,
        is_target_logit: false,
        run_idx: 0,
        reverse_ctx_idx: 0,
        jsNodeId: js,
        clerp: String::new(),
        influence: None,
        activation: None,
    };
    for i in (0..n).filter(|&i| pruned.node_mask[i]) {
        let infl = Some(pruned.cumulative[i]);
        let node = if i < e0 {
            let f = &g.features[i];
            Node {
                feature: f.feature as i64,
                layer: f.layer.to_string(),
                ctx_idx: f.pos,
                feature_type: "cross layer transcoder".into(),
                influence: infl,
                activation: Some(f64::from(f.activation)),
                ..blank(
                    format!("{}_{}_{}", f.layer, f.feature, f.pos),
                    format!("{}_{}-0", f.layer, f.feature),
                )
            }
        } else if i < t0 {
            let (layer, pos) = ((i - e0) / n_pos, (i - e0) % n_pos);
            Node {
                feature: -1,
                layer: layer.to_string(),
                ctx_idx: pos,
                feature_type: "mlp reconstruction error".into(),
                influence: infl,
                ..blank(format!("0_{layer}_{pos}"), format!("{layer}_{pos}-0"))
            }
        } else if i < l0 {
            let pos = i - t0;
            let v = g.tokens[pos];
            Node {
                feature: pos as i64,
                layer: "E".into(),
                ctx_idx: pos,
                feature_type: "embedding".into(),
                influence: infl,
                ..blank(format!("E_{v}_{pos}"), format!("E_{v}-{pos}"))
            }
        } else {
            let k = i - l0;
            let (v, p) = (g.logit_tokens[k], f64::from(g.logit_probs[k]));
            let (layer, pos) = (g.n_layers + 1, n_pos - 1);
            let text = labels
                .logit_tokens
                .get(k)
                .map(|s| display_token(s))
                .unwrap_or_default();
            Node {
                feature: i64::from(v),
                layer: layer.to_string(),
                ctx_idx: pos,
                feature_type: "logit".into(),
                token_prob: p,
                is_target_logit: k == 0,
                clerp: format!("Output \"{text}\" (p={p:.3})"),
                ..blank(format!("{layer}_{v}_{pos}"), format!("L_{v}-{pos}"))
            }
        };
        nodes[i] = Some(node);
    }
    let mut links = Vec::new();
    let mut connected = vec![false; n];
    for t in 0..n {
        for s in 0..n {
            if !pruned.edge_mask.contains(t, s) {
                continue;
            }
            if let (Some(src), Some(dst)) = (&nodes[s], &nodes[t]) {
                links.push(Link {
                    source: src.node_id.clone(),
                    target: dst.node_id.clone(),
                    weight: f64::from(g.adjacency[t * n + s]),
                });
                connected[s] = true;
                connected[t] = true;
            }
        }
    }
    let used = nodes
        .into_iter()
        .enumerate()
        .filter_map(|(i, node)| node.filter(|_| connected[i] || i >= t0))
        .collect();
    let scan = format!(
        "custom-{}",
        &zephyra_io::sha256_hex(labels.transcoders.join("-").as_bytes())[..16]
    );
    GraphFile {
        metadata: Metadata {
            slug: labels.slug.to_string(),
            scan,
            transcoder_list: labels.transcoders.to_vec(),
            prompt_tokens: labels
                .prompt_tokens
                .iter()
                .map(|t| display_token(t))
                .collect(),
            prompt: labels.prompt.to_string(),
            node_threshold: Some(labels.node_threshold),
        },
        q_params: QParams {
            pinnedIds: Vec::new(),
            supernodes: Vec::new(),
            linkType: "both".into(),
            clickedId: String::new(),
            sg_pos: String::new(),
        },
        nodes: used,
        links,
    }
}
