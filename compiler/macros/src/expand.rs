//! Codegen: one unit struct and one `impl ::lacuna_ir::Pattern` per checked
//! pattern, whose `ir()` replays the checked tree as `PatternBuilder` calls.
//!
//! Emits only absolute `::lacuna_ir::` paths and never fails: everything that
//! could go wrong was reported by `check.rs`. With errors present, their
//! `compile_error!`s come out together with every declared struct, so later
//! uses of a pattern's name do not cascade into more errors.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};
use syn::ext::IdentExt;

use crate::check::{BinaryOp, Body, Checked, Coord, Kind, Node, Pattern, Ty, UnaryOp};

pub fn expand(checked: Checked) -> TokenStream {
    let errors = checked.errors.map(|e| e.to_compile_error());
    let patterns = checked.patterns.iter().map(pattern);
    quote! {
        #errors
        #(#patterns)*
    }
}

fn pattern(p: &Pattern) -> TokenStream {
    let Pattern { docs, vis, name, doc, body } = p;
    let name_str = name.unraw().to_string();
    let ir_body = match body {
        Some(body) => builder_calls(&name_str, doc, body),
        // Unreachable: the invocation that declared it failed to compile.
        None => quote! { ::core::panic!(concat!("pattern `", #name_str, "` did not compile")) },
    };
    quote! {
        #(#docs)*
        #[derive(
            ::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::default::Default,
            ::core::cmp::PartialEq, ::core::cmp::Eq, ::core::hash::Hash
        )]
        #vis struct #name;

        impl ::lacuna_ir::Pattern for #name {
            const NAME: &'static str = #name_str;
            fn ir() -> ::lacuna_ir::PatternIr {
                #ir_body
            }
        }
    }
}

fn builder_calls(name: &str, doc: &str, body: &Body) -> TokenStream {
    let mut used = vec![false; body.inputs.len()];
    mark_reads(&body.mask, &mut used);
    let declares = body.inputs.iter().enumerate().map(|(i, d)| {
        let input_name = &d.name;
        let kind = input_kind(d.kind);
        let call = quote! { ::lacuna_ir::macro_support::checked(p.declare(#input_name, #kind)) };
        if used[i] {
            let var = input_var(i);
            quote! { let #var = #call; }
        } else {
            quote! { #call; }
        }
    });
    let mut nodes = Nodes::default();
    let root = nodes.emit(&body.mask);
    let stmts = nodes.stmts;
    quote! {
        let mut p = ::lacuna_ir::PatternBuilder::new(#name, #doc);
        #(#declares)*
        #(#stmts)*
        ::lacuna_ir::macro_support::checked(p.finish(#root))
    }
}

fn mark_reads(n: &Node, used: &mut [bool]) {
    match n {
        Node::Read(i) => used[*i] = true,
        Node::Unary(_, a) | Node::Cast(_, a) => mark_reads(a, used),
        Node::Binary(_, a, b) => {
            mark_reads(a, used);
            mark_reads(b, used);
        }
        Node::Select(c, a, b) => {
            mark_reads(c, used);
            mark_reads(a, used);
            mark_reads(b, used);
        }
        Node::Coord(_) | Node::I32(_) | Node::F32(_) | Node::Bool(_) => {}
    }
}

fn input_var(i: usize) -> Ident {
    format_ident!("i{}", i)
}

/// `let nN = ...;` statements in post-order; the IR hash-conses repeats.
#[derive(Default)]
struct Nodes {
    stmts: Vec<TokenStream>,
}

impl Nodes {
    fn emit(&mut self, n: &Node) -> Ident {
        let value = match n {
            Node::Coord(c) => {
                let c = coord(*c);
                quote! { p.coord(#c) }
            }
            Node::I32(v) => {
                let v = Literal::i32_suffixed(*v);
                quote! { p.const_i32(#v) }
            }
            Node::F32(v) => {
                let v = Literal::f32_suffixed(*v);
                quote! { p.const_f32(#v) }
            }
            Node::Bool(v) => quote! { p.const_bool(#v) },
            Node::Read(i) => {
                let var = input_var(*i);
                quote! { p.read(#var) }
            }
            Node::Unary(op, a) => {
                let a = self.emit(a);
                let op = unary_op(*op);
                quote! { ::lacuna_ir::macro_support::checked(p.unary(#op, #a)) }
            }
            Node::Binary(op, a, b) => {
                let a = self.emit(a);
                let b = self.emit(b);
                let op = binary_op(*op);
                quote! { ::lacuna_ir::macro_support::checked(p.binary(#op, #a, #b)) }
            }
            Node::Cast(to, a) => {
                let a = self.emit(a);
                let to = scalar(*to);
                quote! { ::lacuna_ir::macro_support::checked(p.cast(#to, #a)) }
            }
            Node::Select(c, a, b) => {
                let c = self.emit(c);
                let a = self.emit(a);
                let b = self.emit(b);
                quote! { ::lacuna_ir::macro_support::checked(p.select(#c, #a, #b)) }
            }
        };
        let var = Ident::new(&format!("n{}", self.stmts.len()), Span::call_site());
        self.stmts.push(quote! { let #var = #value; });
        var
    }
}

fn scalar(t: Ty) -> TokenStream {
    match t {
        Ty::Bool => quote! { ::lacuna_ir::ScalarType::Bool },
        Ty::I32 => quote! { ::lacuna_ir::ScalarType::I32 },
        Ty::F32 => quote! { ::lacuna_ir::ScalarType::F32 },
    }
}

fn input_kind(k: Kind) -> TokenStream {
    match k {
        Kind::Query => quote! { ::lacuna_ir::InputKind::QueryTensor },
        Kind::Key => quote! { ::lacuna_ir::InputKind::KeyTensor },
        Kind::Head(t) => {
            let t = scalar(t);
            quote! { ::lacuna_ir::InputKind::HeadScalar(#t) }
        }
        Kind::Launch(t) => {
            let t = scalar(t);
            quote! { ::lacuna_ir::InputKind::LaunchScalar(#t) }
        }
        Kind::Blocks(n) => {
            let n = Literal::u32_suffixed(n);
            quote! { ::lacuna_ir::InputKind::BlockList { block: #n } }
        }
    }
}

fn coord(c: Coord) -> TokenStream {
    match c {
        Coord::B => quote! { ::lacuna_ir::Coord::B },
        Coord::H => quote! { ::lacuna_ir::Coord::H },
        Coord::Q => quote! { ::lacuna_ir::Coord::Q },
        Coord::K => quote! { ::lacuna_ir::Coord::K },
    }
}

fn unary_op(op: UnaryOp) -> TokenStream {
    match op {
        UnaryOp::Neg => quote! { ::lacuna_ir::UnaryOp::Neg },
        UnaryOp::Not => quote! { ::lacuna_ir::UnaryOp::Not },
        UnaryOp::Abs => quote! { ::lacuna_ir::UnaryOp::Abs },
    }
}

fn binary_op(op: BinaryOp) -> TokenStream {
    let variant = format_ident!("{}", format!("{op:?}"));
    quote! { ::lacuna_ir::BinaryOp::#variant }
}
