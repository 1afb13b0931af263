//! The segment trie that finds the longest matching `path_prefix`.
//!
//! Prefixes are split on `/` into segments; node *n* at depth *d* stands for the prefix made of
//! the first *d* segments, and the root for `/`. This makes matching segment-aware by
//! construction: `/users` is the node `users` under the root, which the path `/users/7`
//! (segments `users`, `7`) passes through and `/usersx` (segment `usersx`) does not.
//!
//! A lookup walks down as far as the path's segments lead, then climbs back through parent
//! links, offering each node's candidates from the longest prefix to the shortest. Nodes live in
//! one `Vec` and refer to each other by index, so the walk allocates nothing.

use super::hash::FastMap;

/// Index of the root (the prefix `/`).
const ROOT: u32 = 0;

/// The prefix index of one host bucket.
#[derive(Debug)]
pub(super) struct PrefixTrie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    /// Next segment → node index.
    children: FastMap<Box<str>, u32>,
    /// The parent's index; the root's is itself (never followed).
    parent: u32,
    /// Routes whose prefix ends here, in precedence order once [`PrefixTrie::finish`] ran.
    routes: Vec<u32>,
}

impl Default for PrefixTrie {
    fn default() -> Self {
        PrefixTrie { nodes: vec![Node::default()] }
    }
}

impl PrefixTrie {
    /// Add `route` under `prefix` (which starts with `/`; `"/"` is the root).
    pub(super) fn insert(&mut self, prefix: &str, route: u32) {
        let mut node = ROOT;
        let rest = prefix.strip_prefix('/').unwrap_or(prefix);
        if !rest.is_empty() {
            for segment in rest.split('/') {
                node = self.child_or_insert(node, segment);
            }
        }
        self.nodes[node as usize].routes.push(route);
    }

    fn child_or_insert(&mut self, node: u32, segment: &str) -> u32 {
        if let Some(&child) = self.nodes[node as usize].children.get(segment) {
            return child;
        }
        let child = u32::try_from(self.nodes.len()).expect("fewer than 2^32 trie nodes");
        self.nodes.push(Node { parent: node, ..Node::default() });
        self.nodes[node as usize].children.insert(segment.into(), child);
        child
    }

    /// Order every node's routes (and drop duplicates from a route naming the same host twice).
    pub(super) fn finish(&mut self, mut sort: impl FnMut(&mut Vec<u32>)) {
        for node in &mut self.nodes {
            sort(&mut node.routes);
            node.routes.shrink_to_fit();
            node.children.shrink_to_fit();
        }
    }

    /// Offer the candidate lists of every prefix matching `path`, longest first, to `pick`; the
    /// first `Some` it returns is the answer.
    pub(super) fn find<T>(&self, path: &str, mut pick: impl FnMut(&[u32]) -> Option<T>) -> Option<T> {
        let mut node = ROOT;
        // A path not starting with `/` (`*`, say) can only match the prefix `/`.
        if let Some(rest) = path.strip_prefix('/') {
            for segment in rest.split('/') {
                let children = &self.nodes[node as usize].children;
                if children.is_empty() {
                    break;
                }
                match children.get(segment) {
                    Some(&child) => node = child,
                    None => break,
                }
            }
        }
        loop {
            let n = &self.nodes[node as usize];
            if !n.routes.is_empty() {
                if let Some(found) = pick(&n.routes) {
                    return Some(found);
                }
            }
            if node == ROOT {
                return None;
            }
            node = n.parent;
        }
    }

    /// Whether no route was inserted.
    pub(super) fn is_empty(&self) -> bool {
        self.nodes.len() == 1 && self.nodes[0].routes.is_empty()
    }
}
