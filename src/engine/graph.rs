//! The step graph: construction checks (unique ids, known needs, no cycles), selections and
//! orderings. No I/O here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::{Step, StepId, StepMeta};

/// A mistake in how the graph was put together; these are bugs or bad configuration,
/// found before anything runs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    /// Two steps claimed the same id.
    #[error("two steps have the id {0}")]
    Duplicate(String),
    /// A step needs an id that no step has.
    #[error("step {step} needs {need}, which is not a step")]
    UnknownNeed { step: String, need: String },
    /// The needs loop back on themselves.
    #[error("dependency cycle through {0}")]
    Cycle(String),
}

/// Steps in insertion order with their dependency edges.
#[derive(Clone, Default)]
pub struct Graph {
    steps: Vec<Arc<dyn Step>>,
    index: BTreeMap<String, usize>,
}

impl Graph {
    pub fn new(steps: Vec<Arc<dyn Step>>) -> Result<Graph, GraphError> {
        let mut index = BTreeMap::new();
        for (i, s) in steps.iter().enumerate() {
            if index.insert(s.meta().id.to_string(), i).is_some() {
                return Err(GraphError::Duplicate(s.meta().id.to_string()));
            }
        }
        for s in &steps {
            for need in s.meta().needs.iter().chain(&s.meta().after) {
                if !index.contains_key(need.as_str()) {
                    return Err(GraphError::UnknownNeed { step: s.meta().id.to_string(), need: need.to_string() });
                }
            }
        }
        let g = Graph { steps, index };
        g.topo_order()?;
        g.down_order()?;
        Ok(g)
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn steps(&self) -> impl Iterator<Item = &Arc<dyn Step>> {
        self.steps.iter()
    }

    pub fn metas(&self) -> impl Iterator<Item = &StepMeta> {
        self.steps.iter().map(|s| s.meta())
    }

    pub fn get(&self, id: &str) -> Option<&Arc<dyn Step>> {
        self.index.get(id).map(|&i| &self.steps[i])
    }

    /// Ids in an order where every step comes after its needs and the steps it goes
    /// `after` (ties keep insertion order): the order of `up`.
    pub fn topo_order(&self) -> Result<Vec<StepId>, GraphError> {
        self.order(false)
    }

    /// Ids in the order of `down`: every step after the steps that need it (needs reversed)
    /// and after the steps it goes `after` (kept as they are); ties keep reverse insertion
    /// order.
    pub fn down_order(&self) -> Result<Vec<StepId>, GraphError> {
        self.order(true)
    }

    /// The steps `i` waits for in the walk: in `up` its needs and afters; in `down` the steps
    /// that need it and its afters.
    fn edges(&self, down: bool) -> Vec<Vec<usize>> {
        let mut waits: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (i, s) in self.steps.iter().enumerate() {
            for need in &s.meta().needs {
                let n = self.index[need.as_str()];
                if down {
                    waits[n].push(i);
                } else {
                    waits[i].push(n);
                }
            }
            for a in &s.meta().after {
                waits[i].push(self.index[a.as_str()]);
            }
        }
        waits
    }

    fn order(&self, down: bool) -> Result<Vec<StepId>, GraphError> {
        let waits = self.edges(down);
        let mut indegree: Vec<usize> = waits.iter().map(Vec::len).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (i, w) in waits.iter().enumerate() {
            for &n in w {
                dependents[n].push(i);
            }
        }
        let positions: Vec<usize> = if down { (0..self.steps.len()).rev().collect() } else { (0..self.steps.len()).collect() };
        let mut ready: VecDeque<usize> = positions.iter().copied().filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(self.steps.len());
        while let Some(i) = ready.pop_front() {
            order.push(self.steps[i].meta().id.clone());
            for &d in &dependents[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.push_back(d);
                }
            }
        }
        if order.len() != self.steps.len() {
            let stuck = positions.into_iter().find(|&i| indegree[i] > 0).unwrap_or(0);
            return Err(GraphError::Cycle(self.steps[stuck].meta().id.to_string()));
        }
        Ok(order)
    }

    /// The ids a step needs, directly or through other steps.
    pub fn ancestors(&self, id: &str) -> BTreeSet<StepId> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<StepId> = self.get(id).map(|s| s.meta().needs.clone()).unwrap_or_default();
        while let Some(n) = todo.pop() {
            if seen.insert(n.clone()) {
                if let Some(s) = self.get(n.as_str()) {
                    todo.extend(s.meta().needs.iter().cloned());
                }
            }
        }
        seen
    }

    /// True when one of the two steps needs the other, directly or not.
    pub fn connected(&self, a: &str, b: &str) -> bool {
        self.ancestors(a).iter().any(|x| x == &b) || self.ancestors(b).iter().any(|x| x == &a)
    }

    /// Ids of the steps whose phase is one of `phases`, in insertion order.
    pub fn ids_in_phases(&self, phases: &[&str]) -> Vec<StepId> {
        self.metas().filter(|m| phases.contains(&m.phase.as_str())).map(|m| m.id.clone()).collect()
    }

    /// Needs of the selected steps that lie outside the selection, with everything those
    /// need in turn: what must already be in place for the selection to run on its own.
    pub fn outside_needs(&self, selection: &BTreeSet<StepId>) -> BTreeSet<StepId> {
        let mut out = BTreeSet::new();
        for id in selection {
            for a in self.ancestors(id.as_str()) {
                if !selection.contains(&a) {
                    out.insert(a);
                }
            }
        }
        out
    }
}
