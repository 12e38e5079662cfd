//! The strongest paths into one node of a pruned graph, for printing.
//!
//! A path's score is the product, over its edges, of the share the edge has in its target's kept input
//! (`|A[t,s]| / Σ_s' kept |A[t,s']|`): the fraction of the target's explanation that runs along it.

use super::graph::Graph;
use super::prune::Pruned;

/// A path, from a node without kept inputs (a token or an error) to the target.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphPath {
    /// Node indices, source first.
    pub nodes: Vec<usize>,
    /// Product of the edges' shares.
    pub score: f64,
}

/// The `k` best paths into `target` over the kept edges (beam search of width `beam` from the target).
pub fn top_paths(
    g: &Graph,
    pruned: &Pruned,
    target: usize,
    k: usize,
    beam: usize,
) -> Vec<GraphPath> {
    let n = g.n_nodes();
    let inputs = |t: usize| -> Vec<(usize, f64)> {
        let row = &g.adjacency[t * n..(t + 1) * n];
        let kept: Vec<(usize, f64)> = (0..n)
            .filter(|&s| pruned.edge_mask.contains(t, s) && row[s] != 0.0)
            .map(|s| (s, f64::from(row[s].abs())))
            .collect();
        let total: f64 = kept.iter().map(|x| x.1).sum();
        kept.into_iter().map(|(s, w)| (s, w / total)).collect()
    };
    let mut open = vec![GraphPath {
        nodes: vec![target],
        score: 1.0,
    }];
    let mut done: Vec<GraphPath> = Vec::new();
    // Every edge goes to a strictly later layer (or to a logit), so paths are at most n_layers + 2 long.
    for _ in 0..g.n_layers + 3 {
        let mut next = Vec::new();
        for p in open {
            let head = p.nodes[p.nodes.len() - 1];
            let ins = inputs(head);
            if ins.is_empty() {
                if head != target {
                    done.push(p);
                }
                continue;
            }
            for (s, share) in ins {
                let mut nodes = p.nodes.clone();
                nodes.push(s);
                next.push(GraphPath {
                    nodes,
                    score: p.score * share,
                });
            }
        }
        next.sort_by(|a, b| b.score.total_cmp(&a.score));
        next.truncate(beam);
        open = next;
        if open.is_empty() {
            break;
        }
    }
    done.sort_by(|a, b| b.score.total_cmp(&a.score));
    done.truncate(k);
    for p in &mut done {
        p.nodes.reverse();
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::ActiveFeature;

    #[test]
    fn paths_are_ranked_by_the_product_of_input_shares() {
        // Nodes [f (layer 0), error, token, logit]; logit ← f 3, ← token 1; f ← token 2, ← error 2.
        let mut adjacency = vec![0.0f32; 16];
        adjacency[1] = 2.0;
        adjacency[2] = 2.0;
        adjacency[12] = 3.0;
        adjacency[14] = -1.0;
        let g = Graph {
            tokens: vec![9],
            n_layers: 1,
            features: vec![ActiveFeature {
                layer: 0,
                pos: 0,
                feature: 1,
                activation: 1.0,
                pre_activation: 1.0,
            }],
            n_active: 1,
            logit_tokens: vec![4],
            logit_probs: vec![1.0],
            adjacency,
        };
        let pruned = Pruned {
            node_mask: vec![true; 4],
            edge_mask: crate::attribution::prune::EdgeSet::from_fn(4, |t, s| {
                g.adjacency[t * 4 + s] != 0.0
            }),
            cumulative: vec![0.0; 4],
        };
        let paths = top_paths(&g, &pruned, 3, 5, 10);
        // token→f→logit and error→f→logit: 3/4 · 1/2 each; token→logit: 1/4.
        assert_eq!(paths.len(), 3);
        assert_eq!(paths[0].score, 0.375);
        assert_eq!(paths[1].score, 0.375);
        assert_eq!(
            paths[2],
            GraphPath {
                nodes: vec![2, 3],
                score: 0.25
            }
        );
        assert!(paths[..2].iter().any(|p| p.nodes == vec![1, 0, 3]));
        assert!(paths[..2].iter().any(|p| p.nodes == vec![2, 0, 3]));
    }
}
