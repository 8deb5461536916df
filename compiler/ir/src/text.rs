//! The text form of a pattern: one line per node, stable, snapshot-tested.
//!
//! ```text
//! pattern Causal(): "Inclusive causal mask."
//!   %0 = coord q
//!   %1 = coord k
//!   %2 = ge %0, %1 : bool
//!   mask %2
//! ```

use std::fmt;

use crate::expr::Node;
use crate::pattern::PatternIr;

impl fmt::Display for PatternIr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pattern {}(", self.name)?;
        for (i, d) in self.inputs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", d.name, d.kind)?;
        }
        f.write_str(")")?;
        if !self.doc.is_empty() {
            write!(f, ": {:?}", self.doc.split_whitespace().collect::<Vec<_>>().join(" "))?;
        }
        writeln!(f)?;
        for (id, node) in self.nodes() {
            let ty = self.ty(id);
            write!(f, "  {id} = ")?;
            match node {
                Node::Coord(c) => write!(f, "coord {}", c.name())?,
                Node::ConstI32(v) => write!(f, "const {v} : i32")?,
                Node::ConstF32(v) => write!(f, "const {v:?} : f32")?,
                Node::ConstBool(v) => write!(f, "const {v} : bool")?,
                Node::Input(i) => {
                    let d = self.input(*i);
                    write!(f, "load {} : {ty}", d.kind.access_form(&d.name))?
                }
                Node::Unary(op, a) => write!(f, "{} {a} : {ty}", op.name())?,
                Node::Binary(op, a, b) => write!(f, "{} {a}, {b} : {ty}", op.name())?,
                Node::Cast(to, a) => write!(f, "cast {a} to {to}")?,
                Node::Select(c, a, b) => write!(f, "select {c}, {a}, {b} : {ty}")?,
            }
            writeln!(f)?;
        }
        writeln!(f, "  mask {}", self.root)
    }
}
