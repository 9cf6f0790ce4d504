//! The graph IR: a topologically ordered list of nodes over per-image values.
//!
//! The IR is independent of ONNX. Values have per-image shapes (the batch dimension is
//! implicit); operator parameters live inside the operators. A graph has one input (the
//! image batch) and one output (the logits or probabilities).

use std::collections::BTreeMap;

use crate::error::GraphError;
use crate::ops::{GateKind, Op, OpClass};

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// A tensor flowing between nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    /// Per-image shape.
    pub shape: Vec<usize>,
}

/// One operator application.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name of the source node (the ONNX node name), kept for errors and reports.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
}

/// A network as the engine runs it and conversion rewrites it.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub values: Vec<Value>,
    /// In topological order: a node only reads the graph input or earlier nodes' outputs.
    pub nodes: Vec<Node>,
    pub input: ValueId,
    pub output: ValueId,
}

impl Graph {
    /// An empty graph whose input has the given per-image shape.
    pub fn new(input_name: &str, input_shape: Vec<usize>) -> Self {
        Graph {
            values: vec![Value {
                name: input_name.to_string(),
                shape: input_shape,
            }],
            nodes: Vec::new(),
            input: 0,
            output: 0,
        }
    }

    /// Appends a node after checking its inputs' shapes; returns its output value.
    ///
    /// The new value becomes the graph output until another node is added or
    /// [`Graph::set_output`] says otherwise.
    pub fn add_node(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<ValueId>,
        output_name: &str,
    ) -> Result<ValueId, GraphError> {
        let err = |detail: String| GraphError::Node {
            node: name.to_string(),
            op: op.name(),
            detail,
        };
        if let Some(&bad) = inputs.iter().find(|&&v| v >= self.values.len()) {
            return Err(err(format!("input value #{bad} does not exist")));
        }
        let shapes: Vec<&[usize]> = inputs
            .iter()
            .map(|&v| self.values[v].shape.as_slice())
            .collect();
        let shape = op.output_shape(&shapes).map_err(err)?;
        let output = self.values.len();
        self.values.push(Value {
            name: output_name.to_string(),
            shape,
        });
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs,
            output,
        });
        self.output = output;
        Ok(output)
    }

    pub fn set_output(&mut self, value: ValueId) -> Result<(), GraphError> {
        if value >= self.values.len() {
            return Err(GraphError::Structure(format!(
                "output value #{value} does not exist"
            )));
        }
        self.output = value;
        Ok(())
    }

    pub fn input_shape(&self) -> &[usize] {
        &self.values[self.input].shape
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.values[self.output].shape
    }

    /// The node producing each value (`None` for the graph input).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            p[n.output] = Some(i);
        }
        p
    }

    /// How many node inputs (plus the graph output) read each value.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.values.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                c[i] += 1;
            }
        }
        c[self.output] += 1;
        c
    }

    /// Trained parameters held by all operators.
    pub fn param_count(&self) -> usize {
        self.nodes.iter().map(|n| n.op.param_count()).sum()
    }

    /// Number of nodes per operator name, sorted by name.
    pub fn op_histogram(&self) -> BTreeMap<&'static str, usize> {
        let mut h = BTreeMap::new();
        for n in &self.nodes {
            *h.entry(n.op.name()).or_insert(0) += 1;
        }
        h
    }

    /// The gates conversion replaces: `(node index, gate)` in graph order.
    pub fn gates(&self) -> Vec<(usize, GateKind)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match n.op.class() {
                OpClass::Gate(g) => Some((i, g)),
                _ => None,
            })
            .collect()
    }

    /// Drops [`Op::Identity`] nodes (rewiring their readers) and nodes the output does not
    /// depend on, then renumbers values densely.
    pub fn compact(&mut self) {
        // Resolve identities: alias[v] = the value v forwards.
        let mut alias: Vec<ValueId> = (0..self.values.len()).collect();
        for n in &self.nodes {
            if matches!(n.op, Op::Identity) {
                alias[n.output] = alias[n.inputs[0]];
            }
        }
        for n in &mut self.nodes {
            n.inputs.iter_mut().for_each(|v| *v = alias[*v]);
        }
        self.output = alias[self.output];
        self.nodes.retain(|n| !matches!(n.op, Op::Identity));
        // Keep only what the output depends on.
        let mut live = vec![false; self.values.len()];
        live[self.output] = true;
        live[self.input] = true;
        let mut keep = vec![false; self.nodes.len()];
        for i in (0..self.nodes.len()).rev() {
            if live[self.nodes[i].output] {
                keep[i] = true;
                for &v in &self.nodes[i].inputs {
                    live[v] = true;
                }
            }
        }
        let mut k = keep.iter();
        self.nodes.retain(|_| k.next().copied().unwrap_or(false));
        // Renumber.
        let mut new_id = vec![usize::MAX; self.values.len()];
        let mut values = Vec::new();
        let mut take = |v: ValueId, values: &mut Vec<Value>| {
            if new_id[v] == usize::MAX {
                new_id[v] = values.len();
                values.push(self.values[v].clone());
            }
            new_id[v]
        };
        let input = take(self.input, &mut values);
        for n in &mut self.nodes {
            n.output = take(n.output, &mut values);
        }
        for n in &mut self.nodes {
            n.inputs.iter_mut().for_each(|v| *v = new_id[*v]);
        }
        self.output = new_id[self.output];
        self.input = input;
        self.values = values;
    }

    /// Checks that the graph is well formed: values exist, nodes are in topological order and
    /// every node's stored shape is what its operator computes.
    pub fn validate(&self) -> Result<(), GraphError> {
        let mut defined = vec![false; self.values.len()];
        if self.input >= self.values.len() || self.output >= self.values.len() {
            return Err(GraphError::Structure(
                "input or output value does not exist".into(),
            ));
        }
        defined[self.input] = true;
        for n in &self.nodes {
            let err = |detail: String| GraphError::Node {
                node: n.name.clone(),
                op: n.op.name(),
                detail,
            };
            if n.output >= self.values.len() || defined[n.output] {
                return Err(err("output value missing or defined twice".into()));
            }
            let mut shapes = Vec::new();
            for &i in &n.inputs {
                if i >= self.values.len() || !defined[i] {
                    return Err(err(format!("reads value #{i} before it is defined")));
                }
                shapes.push(self.values[i].shape.as_slice());
            }
            let shape = n.op.output_shape(&shapes).map_err(err)?;
            if shape != self.values[n.output].shape {
                return Err(err(format!(
                    "stored shape {:?} differs from the computed {shape:?}",
                    self.values[n.output].shape
                )));
            }
            defined[n.output] = true;
        }
        if !defined[self.output] {
            return Err(GraphError::Structure("the output is never computed".into()));
        }
        Ok(())
    }
}
