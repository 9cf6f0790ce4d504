//! Typed access to node attributes, with errors that name the node and the attribute.

use amos_proto::onnx::{AttributeProto, attribute_proto::AttributeType};

use super::tensor::{Const, read_tensor};
use super::{ImportError, NodeCx};

impl NodeCx<'_> {
    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    /// Rejects attributes the importer does not understand, rather than ignoring them.
    pub fn allow_attrs(&self, known: &[&str]) -> Result<(), ImportError> {
        for a in &self.node.attribute {
            let name = a.name.as_deref().unwrap_or("");
            if !known.contains(&name) {
                return Err(self.err(format!("attribute '{name}' is not supported")));
            }
        }
        Ok(())
    }

    fn typed(&self, name: &str, ty: AttributeType) -> Result<Option<&AttributeProto>, ImportError> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.r#type == Some(ty as i32) || a.r#type.is_none() => Ok(Some(a)),
            Some(a) => Err(self.err(format!(
                "attribute '{name}' has type {:?}, expected {}",
                a.r#type
                    .and_then(|t| AttributeType::try_from(t).ok())
                    .map(|t| t.as_str_name()),
                ty.as_str_name()
            ))),
        }
    }

    pub fn attr_int(&self, name: &str) -> Result<Option<i64>, ImportError> {
        Ok(self.typed(name, AttributeType::Int)?.and_then(|a| a.i))
    }

    pub fn attr_float(&self, name: &str) -> Result<Option<f32>, ImportError> {
        Ok(self.typed(name, AttributeType::Float)?.and_then(|a| a.f))
    }

    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>, ImportError> {
        Ok(self
            .typed(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    pub fn attr_floats(&self, name: &str) -> Result<Option<Vec<f32>>, ImportError> {
        Ok(self
            .typed(name, AttributeType::Floats)?
            .map(|a| a.floats.clone()))
    }

    pub fn attr_string(&self, name: &str) -> Result<Option<String>, ImportError> {
        Ok(self
            .typed(name, AttributeType::String)?
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned()))
    }

    pub fn attr_tensor(&self, name: &str) -> Result<Option<Const>, ImportError> {
        match self
            .typed(name, AttributeType::Tensor)?
            .and_then(|a| a.t.as_ref())
        {
            None => Ok(None),
            Some(t) => read_tensor(t, None)
                .map(Some)
                .map_err(|e| self.err(format!("attribute '{name}': {e}"))),
        }
    }

    /// A list of non-negative integers (kernel sizes, strides, pads).
    pub fn attr_usizes(&self, name: &str) -> Result<Option<Vec<usize>>, ImportError> {
        self.attr_ints(name)?
            .map(|v| {
                v.iter()
                    .map(|&x| {
                        usize::try_from(x).map_err(|_| {
                            self.err(format!("attribute '{name}' has a negative entry {x}"))
                        })
                    })
                    .collect()
            })
            .transpose()
    }
}
