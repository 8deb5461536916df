//! Names and types: turns the parsed AST into typed trees that the IR is
//! guaranteed to accept, or into errors on the user's tokens.
//!
//! The typing rules are the IR's (`ExprBuilder::{unary, binary, cast, select}`
//! in lacuna-ir); they are enforced here so that expansion never fails. Every
//! error is collected (not first-one-wins) and an ill-typed sub-expression
//! yields no type, so one mistake reports once instead of cascading.

use std::fmt;

use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{Attribute, BinOp, Expr, GenericArgument, Ident, Lit, PathArguments, Type, UnOp, Visibility};

use crate::parse::{Header, Item, Param, PatternDef};

/// A value type of the predicate language (the IR's `ScalarType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Bool,
    I32,
    F32,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::Bool => "bool",
            Ty::I32 => "i32",
            Ty::F32 => "f32",
        })
    }
}

/// How an input is declared (the IR's `InputKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Query,
    Key,
    Head(Ty),
    Launch(Ty),
    Blocks(u32),
}

impl Kind {
    fn value_type(self) -> Ty {
        match self {
            Kind::Query | Kind::Key => Ty::I32,
            Kind::Head(t) | Kind::Launch(t) => t,
            Kind::Blocks(_) => Ty::Bool,
        }
    }

    /// `a query-side input (Q<i32>)`, for messages.
    fn describe(self) -> String {
        match self {
            Kind::Query => "a query-side input (Q<i32>)".into(),
            Kind::Key => "a key-side input (K<i32>)".into(),
            Kind::Head(t) => format!("a per-head input (H<{t}>)"),
            Kind::Launch(t) => format!("a launch scalar ({t})"),
            Kind::Blocks(n) => format!("a block list (Blocks<{n}>)"),
        }
    }

    /// How a read of `name` is written.
    fn access_form(self, name: &str) -> String {
        match self {
            Kind::Query => format!("{name}[q]"),
            Kind::Key => format!("{name}[k]"),
            Kind::Head(_) => format!("{name}[h]"),
            Kind::Launch(_) => name.to_string(),
            Kind::Blocks(_) => format!("{name}[q, k]"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coord {
    B,
    H,
    Q,
    K,
}

const COORDS: [(&str, Coord, &str); 4] = [
    ("b", Coord::B, "the batch index"),
    ("h", Coord::H, "the head index"),
    ("q", Coord::Q, "the query position"),
    ("k", Coord::K, "the key position"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Not,
    Abs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Min,
    Max,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinaryOp {
    fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }

    fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge)
    }
}

/// A type-checked expression tree; every node maps to one IR builder call.
pub enum Node {
    Coord(Coord),
    I32(i32),
    F32(f32),
    Bool(bool),
    /// Reads the input with this declaration index.
    Read(usize),
    Unary(UnaryOp, Box<Node>),
    Binary(BinaryOp, Box<Node>, Box<Node>),
    Cast(Ty, Box<Node>),
    Select(Box<Node>, Box<Node>, Box<Node>),
}

pub struct InputDecl {
    pub name: String,
    pub kind: Kind,
}

/// A checked pattern: inputs and mask, ready to expand.
pub struct Body {
    pub inputs: Vec<InputDecl>,
    pub mask: Node,
}

/// What expansion needs of one declaration. `body` is `None` when the
/// declaration has errors: only a placeholder struct is emitted for it.
pub struct Pattern {
    pub docs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub doc: String,
    pub body: Option<Body>,
}

pub struct Checked {
    pub patterns: Vec<Pattern>,
    pub errors: Option<syn::Error>,
}

/// Checks every declaration, collecting every error.
pub fn check(items: Vec<Item>) -> Checked {
    let mut errors = Errors::default();
    let mut patterns: Vec<Pattern> = Vec::new();
    for item in items {
        let pattern = match item {
            Item::Parsed(def) => check_def(def, &mut errors),
            Item::Broken { header, error } => {
                errors.push(error);
                match header {
                    Some(h) => placeholder(h, &mut errors),
                    None => continue,
                }
            }
        };
        if patterns.iter().any(|p| p.name == pattern.name) {
            errors.at(
                &pattern.name,
                format!("pattern `{}` is declared twice in this `pattern!`; rename one of them", pattern.name),
            );
            continue;
        }
        patterns.push(pattern);
    }
    Checked { patterns, errors: errors.combined }
}

#[derive(Default)]
struct Errors {
    combined: Option<syn::Error>,
}

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.combined {
            Some(all) => all.combine(e),
            None => self.combined = Some(e),
        }
    }

    fn at<T: ToTokens>(&mut self, tokens: T, msg: impl fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, msg));
    }

    fn count(&self) -> usize {
        self.combined.as_ref().map_or(0, |e| e.into_iter().count())
    }
}

/// Keeps `///` docs, rejects other attributes; returns the docs and the doc text.
fn split_docs(attrs: Vec<Attribute>, errors: &mut Errors) -> (Vec<Attribute>, String) {
    let mut docs = Vec::new();
    let mut lines = Vec::new();
    for attr in attrs {
        let text = match &attr.meta {
            syn::Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        };
        match text {
            Some(text) => {
                lines.extend(text.split('\n').map(|l| l.trim().to_string()));
                docs.push(attr);
            }
            None => errors.at(&attr, "only doc comments (`/// ...`) are allowed on a pattern; remove this attribute"),
        }
    }
    (docs, lines.join("\n").trim().to_string())
}

fn placeholder(h: Header, errors: &mut Errors) -> Pattern {
    let (docs, doc) = split_docs(h.attrs, errors);
    Pattern { docs, vis: h.vis, name: h.name, doc, body: None }
}

fn check_def(def: PatternDef, errors: &mut Errors) -> Pattern {
    let before = errors.count();
    let PatternDef { header, params, body } = def;
    let (docs, doc) = split_docs(header.attrs, errors);
    let inputs = check_params(&params, errors);
    let mut scope = Scope { inputs: &inputs, errors: &mut *errors };
    let mask = scope.expr(&body);
    if let Some((_, ty)) = &mask {
        if *ty != Ty::Bool {
            errors.at(&body, format!("this mask has type {ty}; a mask must be a bool expression such as `q >= k`"));
        }
    }
    let body = match mask {
        Some((mask, Ty::Bool)) if errors.count() == before => Some(Body {
            inputs: inputs
                .into_iter()
                .filter_map(|(name, kind)| Some(InputDecl { name: name.to_string(), kind: kind? }))
                .collect(),
            mask,
        }),
        _ => None,
    };
    Pattern { docs, vis: header.vis, name: header.name, doc, body }
}

/// Classifies every parameter. One whose type is in error stays in scope
/// without a kind, so its uses are not reported again as unknown names.
fn check_params(params: &[Param], errors: &mut Errors) -> Vec<(Ident, Option<Kind>)> {
    let mut inputs: Vec<(Ident, Option<Kind>)> = Vec::new();
    let mut seen: Vec<Ident> = Vec::new();
    for p in params {
        // `r#type` declares the input `type`: the IR wants plain identifiers.
        let ident = p.name.unraw();
        let name = ident.to_string();
        if let Some((c, _, what)) = COORDS.iter().find(|(c, ..)| *c == name) {
            errors.at(
                &p.name,
                format!(
                    "`{c}` is a coordinate ({what}) and cannot name an input; rename the input (e.g. `{c}_pos` or `{c}_id`)"
                ),
            );
            continue;
        }
        if seen.contains(&ident) {
            errors.at(&p.name, format!("input `{name}` is declared twice; give each input its own name"));
            continue;
        }
        seen.push(ident.clone());
        inputs.push((ident, classify_type(&p.ty, errors)));
    }
    inputs
}

const ALLOWED_TYPES: &str = "the input types are `Q<i32>` (per query token), `K<i32>` (per key token), \
`H<i32>`/`H<f32>` (per head), `i32`/`f32` (per launch) and `Blocks<N>` (selected key blocks)";

fn classify_type(ty: &Type, errors: &mut Errors) -> Option<Kind> {
    let unsupported = |errors: &mut Errors, hint: &str| {
        errors.at(ty, format!("unsupported input type{hint}; {ALLOWED_TYPES}"));
        None
    };
    let Type::Path(tp) = ty else { return unsupported(errors, "") };
    if tp.qself.is_some() || tp.path.leading_colon.is_some() || tp.path.segments.len() != 1 {
        return unsupported(errors, "");
    }
    let seg = &tp.path.segments[0];
    let head = seg.ident.to_string();
    let args: Vec<&GenericArgument> = match &seg.arguments {
        PathArguments::None => Vec::new(),
        PathArguments::AngleBracketed(a) => a.args.iter().collect(),
        PathArguments::Parenthesized(_) => return unsupported(errors, ""),
    };
    let scalar = |a: &GenericArgument| match a {
        GenericArgument::Type(Type::Path(t)) if t.qself.is_none() && t.path.is_ident("i32") => Some(Ty::I32),
        GenericArgument::Type(Type::Path(t)) if t.qself.is_none() && t.path.is_ident("f32") => Some(Ty::F32),
        _ => None,
    };
    match (head.as_str(), args.as_slice()) {
        ("i32", []) => Some(Kind::Launch(Ty::I32)),
        ("f32", []) => Some(Kind::Launch(Ty::F32)),
        ("Q" | "K", [a]) => match scalar(a) {
            Some(Ty::I32) => Some(if head == "Q" { Kind::Query } else { Kind::Key }),
            _ => unsupported(errors, &format!(" (`{head}<..>` tensors hold i32 positions or ids: use `{head}<i32>`)")),
        },
        ("H", [a]) => match scalar(a) {
            Some(t) => Some(Kind::Head(t)),
            None => unsupported(errors, " (per-head inputs are `H<i32>` or `H<f32>`)"),
        },
        ("Blocks", [GenericArgument::Const(Expr::Lit(syn::ExprLit { lit: Lit::Int(n), .. }))]) => {
            match n.base10_parse::<u32>() {
                Ok(v) if (16..=1024).contains(&v) && v.is_power_of_two() && n.suffix().is_empty() => {
                    Some(Kind::Blocks(v))
                }
                _ => {
                    errors.at(
                        n,
                        format!(
                            "block size `{n}` is not supported; use a power of two from 16 to 1024 \
                             (16, 32, 64, 128, 256, 512 or 1024)"
                        ),
                    );
                    None
                }
            }
        }
        ("u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i64" | "isize", []) => {
            unsupported(errors, " (pattern integers are i32: use `i32`)")
        }
        ("f64", []) => unsupported(errors, " (pattern floats are f32: use `f32`)"),
        ("bool", []) => {
            unsupported(errors, " (a bool input is not supported: pass an `i32` and compare it, e.g. `flag != 0`)")
        }
        ("Q" | "K" | "H", []) => {
            unsupported(errors, &format!(" (`{head}` needs its element type, e.g. `{head}<i32>`)"))
        }
        ("Blocks", _) => {
            unsupported(errors, " (the block size of `Blocks<N>` must be an integer literal, e.g. `Blocks<64>`)")
        }
        _ => unsupported(errors, ""),
    }
}

const SUPPORTED_OPERATORS: &str =
    "the supported operators are `+ - * / %`, `== != < <= > >=`, `&& ||`, unary `-` and `!`, `as i32` and `as f32`";

const SUPPORTED_FORMS: &str = "a mask is one expression built from literals, the coordinates `b` `h` `q` `k`, \
inputs, operators, `as i32`/`as f32`, `min`/`max`/`abs` and `if c { a } else { b }`";

/// A checked sub-expression, or `None` after an error was reported for it.
type Typed = Option<(Node, Ty)>;

struct Scope<'a> {
    inputs: &'a [(Ident, Option<Kind>)],
    errors: &'a mut Errors,
}

impl Scope<'_> {
    fn error<T: ToTokens>(&mut self, tokens: T, msg: impl fmt::Display) -> Typed {
        self.errors.at(tokens, msg);
        None
    }

    fn expr(&mut self, e: &Expr) -> Typed {
        match e {
            Expr::Lit(l) => self.literal(&l.lit, false, e),
            Expr::Paren(p) => self.expr(&p.expr),
            Expr::Group(g) => self.expr(&g.expr),
            Expr::Path(p) => {
                let Some(ident) = single_ident(&p.path, p.qself.is_some()) else {
                    return self.error(
                        e,
                        format!("paths are not supported; name an input or a coordinate; {SUPPORTED_FORMS}"),
                    );
                };
                self.name(ident)
            }
            Expr::Index(ix) => self.index(ix),
            Expr::Unary(u) => self.unary(u),
            Expr::Binary(b) => self.binary(b),
            Expr::Cast(c) => self.cast(c),
            Expr::Call(c) => self.call(c),
            Expr::MethodCall(m) => self.method(m),
            Expr::If(i) => self.if_else(i),
            Expr::Assign(a) => {
                self.expr(&a.left);
                self.expr(&a.right);
                self.error(
                    a.eq_token,
                    format!("`=` assigns and is not supported; to compare use `==`; {SUPPORTED_OPERATORS}"),
                )
            }
            Expr::Range(_) => {
                self.error(e, "ranges (`a..b`) are not supported; to test membership write `lo <= x && x < hi`")
            }
            other => self.error(other, format!("{} is not supported in a pattern; {SUPPORTED_FORMS}", describe(other))),
        }
    }

    fn literal(&mut self, lit: &Lit, negated: bool, whole: &Expr) -> Typed {
        match lit {
            Lit::Int(i) => {
                if !matches!(i.suffix(), "" | "i32") {
                    return self.error(
                        i,
                        format!(
                            "integer literals are i32: write `{}` or `{}i32`, not `{i}`",
                            i.base10_digits(),
                            i.base10_digits()
                        ),
                    );
                }
                let v = i.base10_parse::<u64>().ok().map(|v| if negated { -(v as i128) } else { v as i128 });
                match v.and_then(|v| i32::try_from(v).ok()) {
                    Some(v) => Some((Node::I32(v), Ty::I32)),
                    None => self.error(
                        whole,
                        format!(
                            "integer literal `{}{}` does not fit in i32 (from {} to {}); pattern integers are i32",
                            if negated { "-" } else { "" },
                            i.base10_digits(),
                            i32::MIN,
                            i32::MAX
                        ),
                    ),
                }
            }
            Lit::Float(f) => {
                if !matches!(f.suffix(), "" | "f32") {
                    return self.error(
                        f,
                        format!(
                            "float literals are f32: write `{}` or `{}f32`, not `{f}`",
                            f.base10_digits(),
                            f.base10_digits()
                        ),
                    );
                }
                match f.base10_parse::<f32>() {
                    Ok(v) if v.is_finite() => Some((Node::F32(if negated { -v } else { v }), Ty::F32)),
                    _ => self.error(whole, format!("float literal `{f}` does not fit in f32")),
                }
            }
            Lit::Bool(b) => Some((Node::Bool(b.value), Ty::Bool)),
            Lit::Str(_) | Lit::ByteStr(_) | Lit::CStr(_) => self.error(
                lit,
                format!("string literals are not supported; pattern values are i32, f32 or bool; {SUPPORTED_FORMS}"),
            ),
            Lit::Byte(_) | Lit::Char(_) => self.error(
                lit,
                format!("character literals are not supported; pattern values are i32, f32 or bool; {SUPPORTED_FORMS}"),
            ),
            _ => self.error(lit, format!("this literal is not supported; {SUPPORTED_FORMS}")),
        }
    }

    /// `Some((index, None))` for an input whose declaration is in error.
    fn lookup(&self, ident: &Ident) -> Option<(usize, Option<Kind>)> {
        let ident = ident.unraw();
        self.inputs.iter().position(|(n, _)| *n == ident).map(|i| (i, self.inputs[i].1))
    }

    fn coord(ident: &Ident) -> Option<Coord> {
        let ident = ident.unraw();
        COORDS.iter().find(|(n, ..)| ident == n).map(|(_, c, _)| *c)
    }

    /// A bare name: a coordinate or a launch scalar.
    fn name(&mut self, ident: &Ident) -> Typed {
        if let Some(c) = Self::coord(ident) {
            return Some((Node::Coord(c), Ty::I32));
        }
        match self.lookup(ident) {
            Some((_, None)) => None,
            Some((i, Some(Kind::Launch(t)))) => Some((Node::Read(i), t)),
            Some((_, Some(kind))) => self.error(
                ident,
                format!(
                    "`{ident}` is {}; read it as `{}`",
                    kind.describe(),
                    kind.access_form(&ident.unraw().to_string())
                ),
            ),
            None => self.unknown(ident, "i32"),
        }
    }

    /// `as_type` is the declaration suggested for a new input, from how it is used.
    fn unknown(&mut self, ident: &Ident, as_type: &str) -> Typed {
        let name = ident.to_string();
        let inputs: Vec<String> = self.inputs.iter().map(|(n, _)| n.to_string()).collect();
        let candidates = inputs.iter().map(String::as_str).chain(COORDS.iter().map(|(n, ..)| *n));
        let known = if inputs.is_empty() {
            "this pattern declares no inputs".to_string()
        } else {
            format!("the inputs are {}", inputs.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))
        };
        let msg = match closest(&name, candidates) {
            Some(s) => {
                format!("unknown name `{name}`; did you mean `{s}`? ({known}; the coordinates are `b`, `h`, `q`, `k`)")
            }
            None => format!(
                "unknown name `{name}`: {known} and the coordinates are `b`, `h`, `q`, `k`; \
                 to use a new value, declare it as an input (e.g. `{name}: {as_type}`)"
            ),
        };
        self.error(ident, msg)
    }

    fn index(&mut self, ix: &syn::ExprIndex) -> Typed {
        let Expr::Path(base) = &*ix.expr else {
            self.expr(&ix.expr);
            return self.error(ix, format!("only inputs can be indexed (as `pos[q]`); {SUPPORTED_FORMS}"));
        };
        let Some(ident) = single_ident(&base.path, base.qself.is_some()) else {
            return self.error(ix, format!("only inputs can be indexed (as `pos[q]`); {SUPPORTED_FORMS}"));
        };
        if let Some(c) = Self::coord(ident) {
            let what = COORDS.iter().find(|(_, cc, _)| *cc == c).map_or("", |(.., w)| w);
            return self
                .error(ix, format!("`{ident}` is a coordinate ({what}, an i32) and cannot be indexed; use `{ident}`"));
        }
        let Some((i, kind)) = self.lookup(ident) else {
            let names = index_names(&ix.index);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let as_type = match names.as_slice() {
                ["k"] => "K<i32>",
                ["h"] => "H<i32>",
                ["q", "k"] => "Blocks<64>",
                _ => "Q<i32>",
            };
            return self.unknown(ident, as_type);
        };
        // An input whose declaration is in error was reported there.
        let kind = kind?;
        let name = ident.unraw().to_string();
        let want: &[&str] = match kind {
            Kind::Query => &["q"],
            Kind::Key => &["k"],
            Kind::Head(_) => &["h"],
            Kind::Blocks(_) => &["q", "k"],
            Kind::Launch(_) => {
                return self
                    .error(ix, format!("`{name}` is {} and is not indexed; use it bare: `{name}`", kind.describe()))
            }
        };
        if index_names(&ix.index) == want {
            return Some((Node::Read(i), kind.value_type()));
        }
        let how = if want.len() == 1 { format!("`{}`", want[0]) } else { "`[q, k]`".to_string() };
        self.error(
            &ix.index,
            format!("`{name}` is {}; index it with {how}: `{}`", kind.describe(), kind.access_form(&name)),
        )
    }

    fn unary(&mut self, u: &syn::ExprUnary) -> Typed {
        let op = match u.op {
            UnOp::Neg(_) => {
                if let Expr::Lit(l) = &*u.expr {
                    if matches!(l.lit, Lit::Int(_) | Lit::Float(_)) {
                        return self.literal(&l.lit, true, &Expr::Unary(u.clone()));
                    }
                }
                UnaryOp::Neg
            }
            UnOp::Not(_) => UnaryOp::Not,
            _ => {
                self.expr(&u.expr);
                return self.error(
                    u.op,
                    format!(
                        "operator `{}` is not supported (there are no references to dereference in a pattern); {SUPPORTED_OPERATORS}",
                        u.op.to_token_stream()
                    ),
                );
            }
        };
        let (a, t) = self.expr(&u.expr)?;
        self.unary_typed(op, a, t, u.op)
    }

    fn unary_typed<T: ToTokens>(&mut self, op: UnaryOp, a: Node, t: Ty, op_tokens: T) -> Typed {
        match (op, t) {
            (UnaryOp::Not, Ty::Bool) | (UnaryOp::Neg | UnaryOp::Abs, Ty::I32 | Ty::F32) => {
                Some((Node::Unary(op, Box::new(a)), t))
            }
            (UnaryOp::Not, _) => self.error(
                op_tokens,
                format!(
                    "`!` needs a bool, found {t}; to negate a number use `-`, to test it compare it (e.g. `x == 0`)"
                ),
            ),
            (UnaryOp::Neg, _) => self.error(op_tokens, "`-` is not defined on bool; to negate a condition use `!`"),
            (UnaryOp::Abs, _) => self.error(op_tokens, "`abs` is not defined on bool; it takes an i32 or an f32"),
        }
    }

    fn binary(&mut self, b: &syn::ExprBinary) -> Typed {
        use BinOp as B;
        let op = match b.op {
            B::Add(_) => Some(BinaryOp::Add),
            B::Sub(_) => Some(BinaryOp::Sub),
            B::Mul(_) => Some(BinaryOp::Mul),
            B::Div(_) => Some(BinaryOp::Div),
            B::Rem(_) => Some(BinaryOp::Rem),
            B::And(_) => Some(BinaryOp::And),
            B::Or(_) => Some(BinaryOp::Or),
            B::Eq(_) => Some(BinaryOp::Eq),
            B::Ne(_) => Some(BinaryOp::Ne),
            B::Lt(_) => Some(BinaryOp::Lt),
            B::Le(_) => Some(BinaryOp::Le),
            B::Gt(_) => Some(BinaryOp::Gt),
            B::Ge(_) => Some(BinaryOp::Ge),
            _ => None,
        };
        let lhs = self.expr(&b.left);
        let rhs = self.expr(&b.right);
        let Some(op) = op else {
            let sym = b.op.to_token_stream().to_string();
            let hint = match sym.as_str() {
                "&" => " (for a logical and use `&&`)",
                "|" => " (for a logical or use `||`)",
                "^" => " (for a logical xor use `!=` between two bools)",
                "<<" | ">>" => " (multiply or divide by a power of two instead)",
                s if s.ends_with('=') => {
                    " (a pattern is a pure expression; compound assignment has nothing to assign to)"
                }
                _ => "",
            };
            return self.error(b.op, format!("operator `{sym}` is not supported{hint}; {SUPPORTED_OPERATORS}"));
        };
        let (a, ta) = lhs?;
        let (c, tc) = rhs?;
        let sym = b.op.to_token_stream().to_string();
        self.binary_typed(op, &sym, (a, ta, &b.left), (c, tc, &b.right), b)
    }

    /// The IR's `ExprBuilder::binary` rules; `whole` is the span of the whole operation.
    fn binary_typed<T: ToTokens>(
        &mut self,
        op: BinaryOp,
        sym: &str,
        (a, ta, ea): (Node, Ty, &Expr),
        (c, tc, ec): (Node, Ty, &Expr),
        whole: T,
    ) -> Typed {
        let ty = if op.is_logical() {
            if ta != Ty::Bool || tc != Ty::Bool {
                let msg =
                    format!("`{sym}` needs two booleans, found {ta} and {tc}; compare numbers first (e.g. `x > 0`)");
                return match (ta == Ty::Bool, tc == Ty::Bool) {
                    (true, false) => self.error(ec, msg),
                    (false, true) => self.error(ea, msg),
                    _ => self.error(whole, msg),
                };
            }
            Ty::Bool
        } else if op.is_comparison() {
            if ta != tc {
                return self.error(
                    whole,
                    format!("cannot compare {ta} with {tc}; cast one side with `as f32` or `as i32` so both have the same type"),
                );
            }
            if ta == Ty::Bool && !matches!(op, BinaryOp::Eq | BinaryOp::Ne) {
                return self.error(
                    whole,
                    format!("`{sym}` is not defined on bool; bools can only be compared with `==` and `!=`"),
                );
            }
            Ty::Bool
        } else {
            if ta == Ty::Bool || tc == Ty::Bool {
                return self.error(
                    whole,
                    format!("`{sym}` needs two numbers, found {ta} and {tc}; convert a bool to a number with `as i32`"),
                );
            }
            if ta != tc {
                return self.error(
                    whole,
                    format!("`{sym}` needs two numbers of the same type, found {ta} and {tc}; convert one side with `as i32` or `as f32`"),
                );
            }
            if op == BinaryOp::Rem && ta != Ty::I32 {
                return self.error(whole, format!("`%` is only defined on i32, found {ta}"));
            }
            ta
        };
        Some((Node::Binary(op, Box::new(a), Box::new(c)), ty))
    }

    fn cast(&mut self, c: &syn::ExprCast) -> Typed {
        let inner = self.expr(&c.expr);
        let to = match &*c.ty {
            Type::Path(t) if t.qself.is_none() && t.path.is_ident("i32") => Ty::I32,
            Type::Path(t) if t.qself.is_none() && t.path.is_ident("f32") => Ty::F32,
            Type::Path(t) if t.qself.is_none() && t.path.is_ident("bool") => {
                return self.error(&c.ty, "cannot convert to bool with `as`; compare instead (e.g. `x != 0`)")
            }
            other => {
                return self.error(other, "unsupported cast; only `as i32` and `as f32` are supported");
            }
        };
        let (a, from) = inner?;
        if from == to {
            return Some((a, to));
        }
        Some((Node::Cast(to, Box::new(a)), to))
    }

    fn call(&mut self, c: &syn::ExprCall) -> Typed {
        let name = match &*c.func {
            Expr::Path(p) => single_ident(&p.path, p.qself.is_some()).map(|i| (i.to_string(), i)),
            _ => None,
        };
        let Some((name, _)) = name.clone().filter(|(n, _)| matches!(n.as_str(), "min" | "max" | "abs")) else {
            for a in &c.args {
                self.expr(a);
            }
            let what = match name {
                Some((n, _)) => format!("unsupported function `{n}`"),
                None => "unsupported call".to_string(),
            };
            return self.error(
                &c.func,
                format!(
                    "{what}; the supported functions are `min(a, b)`, `max(a, b)` and `abs(a)` \
                     (or `a.min(b)`, `a.max(b)`, `a.abs()`)"
                ),
            );
        };
        let args: Vec<&Expr> = c.args.iter().collect();
        self.builtin(&name, &args, c, &c.func)
    }

    fn method(&mut self, m: &syn::ExprMethodCall) -> Typed {
        let name = m.method.to_string();
        if !matches!(name.as_str(), "min" | "max" | "abs") || m.turbofish.is_some() {
            self.expr(&m.receiver);
            for a in &m.args {
                self.expr(a);
            }
            return self.error(
                &m.method,
                format!("unsupported method `.{name}()`; the supported methods are `.min(x)`, `.max(x)` and `.abs()`"),
            );
        }
        let args: Vec<&Expr> = std::iter::once(&*m.receiver).chain(m.args.iter()).collect();
        self.builtin(&name, &args, m, &m.method)
    }

    /// `min`/`max`/`abs`, with the receiver of a method call as first argument.
    fn builtin<T: ToTokens, N: ToTokens>(&mut self, name: &str, args: &[&Expr], whole: T, name_tokens: N) -> Typed {
        let arity = if name == "abs" { 1 } else { 2 };
        let checked: Vec<Typed> = args.iter().map(|a| self.expr(a)).collect();
        if args.len() != arity {
            let form = if name == "abs" {
                "`abs(a)` or `a.abs()`".to_string()
            } else {
                format!("`{name}(a, b)` or `a.{name}(b)`")
            };
            return self
                .error(whole, format!("`{name}` takes {arity} argument{}: {form}", if arity == 1 { "" } else { "s" }));
        }
        let mut vals = Vec::new();
        for c in checked {
            vals.push(c?);
        }
        let mut vals = vals.into_iter();
        let (a, ta) = vals.next()?;
        if name == "abs" {
            return self.unary_typed(UnaryOp::Abs, a, ta, name_tokens);
        }
        let (c, tc) = vals.next()?;
        let op = if name == "min" { BinaryOp::Min } else { BinaryOp::Max };
        self.binary_typed(op, name, (a, ta, args[0]), (c, tc, args[1]), whole)
    }

    fn if_else(&mut self, i: &syn::ExprIf) -> Typed {
        let cond = self.expr(&i.cond);
        let then = self.block(&i.then_branch);
        let otherwise = match &i.else_branch {
            Some((_, e)) => match &**e {
                Expr::Block(b) if b.label.is_none() => self.block(&b.block),
                other => self.expr(other),
            },
            None => {
                return self.error(i, "`if` needs an `else` branch in a pattern: `if c { a } else { b }`");
            }
        };
        let (c, tc) = cond?;
        if tc != Ty::Bool {
            return self.error(
                &i.cond,
                format!("the condition of `if` must be a bool, found {tc}; compare it (e.g. `x > 0`)"),
            );
        }
        let (a, ta) = then?;
        let (b, tb) = otherwise?;
        if ta != tb {
            return self.error(
                i,
                format!("the branches of this `if` have types {ta} and {tb}; convert one with `as i32` or `as f32`"),
            );
        }
        Some((Node::Select(Box::new(c), Box::new(a), Box::new(b)), ta))
    }

    /// A branch `{ expr }`: exactly one expression, no statements.
    fn block(&mut self, b: &syn::Block) -> Typed {
        match b.stmts.as_slice() {
            [syn::Stmt::Expr(e, None)] => self.expr(e),
            _ => self.error(b, "a branch of `if` must hold exactly one expression, as in `if c { a } else { b }`"),
        }
    }
}

/// The names in `x[q]` or `x[q, k]`; `"?"` for anything but a plain name.
fn index_names(index: &Expr) -> Vec<String> {
    let items: Vec<&Expr> = match index {
        Expr::Tuple(t) => t.elems.iter().collect(),
        Expr::Paren(p) => vec![&*p.expr],
        other => vec![other],
    };
    items
        .into_iter()
        .map(|e| match e {
            Expr::Path(p) if p.qself.is_none() => p.path.get_ident().map_or("?".into(), Ident::to_string),
            _ => "?".into(),
        })
        .collect()
}

fn single_ident(path: &syn::Path, has_qself: bool) -> Option<&Ident> {
    if has_qself {
        return None;
    }
    path.get_ident()
}

/// A noun phrase for an unsupported expression.
fn describe(e: &Expr) -> &'static str {
    match e {
        Expr::Array(_) | Expr::Repeat(_) => "an array",
        Expr::Async(_) | Expr::Await(_) => "async code",
        Expr::Block(_) | Expr::Unsafe(_) | Expr::Const(_) => "a block",
        Expr::Break(_) | Expr::Continue(_) | Expr::Return(_) | Expr::Yield(_) => "control flow",
        Expr::Closure(_) => "a closure",
        Expr::Field(_) => "field access",
        Expr::ForLoop(_) | Expr::Loop(_) | Expr::While(_) => "a loop",
        Expr::Let(_) => "`let`",
        Expr::Macro(_) => "a macro call",
        Expr::Match(_) => "`match`",
        Expr::Reference(_) | Expr::RawAddr(_) => "taking a reference",
        Expr::Struct(_) => "a struct literal",
        Expr::Try(_) | Expr::TryBlock(_) => "`?`",
        Expr::Tuple(_) => "a tuple",
        _ => "this expression",
    }
}

/// The candidate closest to `name`, if it is close enough to be a likely typo.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = if c.eq_ignore_ascii_case(name) { 0 } else { edit_distance(name, c) };
        let close = d <= 2 && d < name.chars().count().max(c.chars().count());
        if close && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::{closest, edit_distance};

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("q_bucket", "q_bucket"), 0);
        assert_eq!(edit_distance("q_buckt", "q_bucket"), 1);
        assert_eq!(edit_distance("k_bucket", "q_bucket"), 1);
        assert_eq!(edit_distance("windw", "window"), 1);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn closest_suggests_only_likely_typos() {
        let names = ["q_bucket", "k_pos", "b", "h", "q", "k"];
        assert_eq!(closest("q_buckt", names.into_iter()), Some("q_bucket"));
        assert_eq!(closest("Q", names.into_iter()), Some("q"));
        assert_eq!(closest("kpos", names.into_iter()), Some("k_pos"));
        // One letter is one edit away from every coordinate: no suggestion.
        assert_eq!(closest("x", names.into_iter()), None);
        assert_eq!(closest("window", names.into_iter()), None);
    }
}
