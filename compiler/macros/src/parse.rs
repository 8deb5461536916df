//! Syntax → AST: splits a `pattern!` invocation into pattern declarations and
//! parses each one. Knows nothing of names or types (that is `check.rs`).
//!
//! One declaration that fails to parse does not hide the others: the input is
//! split on top-level `;` first, and a broken declaration keeps its header
//! (docs, visibility, name) when that much parses, so a placeholder struct can
//! still be emitted for it.

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Ident, Token, Type, Visibility};

/// What precedes the parameter list: `/// docs` `pub(crate)` `Name`.
pub struct Header {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
}

/// `name: Type`, the type left unclassified.
pub struct Param {
    pub name: Ident,
    pub ty: Type,
}

/// `Header(params) = body`.
pub struct PatternDef {
    pub header: Header,
    pub params: Vec<Param>,
    pub body: Expr,
}

/// One `;`-separated declaration of the invocation.
pub enum Item {
    Parsed(PatternDef),
    /// Did not parse; `header` is set when at least `docs vis Name` did.
    Broken {
        header: Option<Header>,
        error: syn::Error,
    },
}

/// Parses a whole invocation. Never fails as a whole: errors live in the items.
pub fn parse(input: TokenStream) -> Vec<Item> {
    split_declarations(input)
        .into_iter()
        .map(|tokens| {
            let tokens = tuple_multi_indices(tokens);
            match parse_def.parse2(tokens.clone()) {
                Ok(def) => Item::Parsed(def),
                Err(error) => Item::Broken { header: parse_header_only.parse2(tokens).ok(), error },
            }
        })
        .collect()
}

/// Splits on `;` outside any group; drops empty pieces (e.g. after the last `;`).
fn split_declarations(input: TokenStream) -> Vec<TokenStream> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for tt in input {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ';' => out.push(std::mem::take(&mut current)),
            _ => current.push(tt),
        }
    }
    out.push(current);
    out.into_iter().filter(|v| !v.is_empty()).map(|v| v.into_iter().collect()).collect()
}

/// Rewrites `x[a, b]` to `x[(a, b)]` so that syn, which accepts one index
/// expression, parses block-list reads. The tuple keeps the brackets' span.
fn tuple_multi_indices(input: TokenStream) -> TokenStream {
    input
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(g) => {
                let inner = tuple_multi_indices(g.stream());
                let has_comma =
                    inner.clone().into_iter().any(|t| matches!(&t, TokenTree::Punct(p) if p.as_char() == ','));
                let stream = if g.delimiter() == Delimiter::Bracket && has_comma {
                    let mut paren = Group::new(Delimiter::Parenthesis, inner);
                    paren.set_span(g.span());
                    TokenStream::from(TokenTree::Group(paren))
                } else {
                    inner
                };
                let mut out = Group::new(g.delimiter(), stream);
                out.set_span(g.span());
                TokenTree::Group(out)
            }
            other => other,
        })
        .collect()
}

fn parse_header(input: ParseStream) -> syn::Result<Header> {
    let attrs = input.call(Attribute::parse_outer)?;
    let vis: Visibility = input.parse()?;
    let name: Ident = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), "expected a pattern name, as in `pub Causal() = q >= k;`"))?;
    Ok(Header { attrs, vis, name })
}

fn parse_header_only(input: ParseStream) -> syn::Result<Header> {
    let header = parse_header(input)?;
    input.parse::<TokenStream>()?;
    Ok(header)
}

fn parse_def(input: ParseStream) -> syn::Result<PatternDef> {
    let header = parse_header(input)?;
    if !input.peek(syn::token::Paren) {
        return Err(input.error(format!(
            "expected the inputs of `{}` in parentheses, as in `{}(pos: Q<i32>) = ...` or `{}() = ...`",
            header.name, header.name, header.name
        )));
    }
    let content;
    syn::parenthesized!(content in input);
    let params = Punctuated::<Param, Token![,]>::parse_terminated_with(&content, parse_param)?;
    input.parse::<Token![=]>().map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("expected `=` and the mask after the inputs, as in `{}() = q >= k;`", header.name),
        )
    })?;
    let body: Expr = input.parse()?;
    if !input.is_empty() {
        return Err(input.error(format!("expected `;` after the mask of pattern `{}`", header.name)));
    }
    Ok(PatternDef { header, params: params.into_iter().collect(), body })
}

fn parse_param(input: ParseStream) -> syn::Result<Param> {
    let name: Ident = input.parse()?;
    input.parse::<Token![:]>()?;
    let ty: Type = input.parse()?;
    Ok(Param { name, ty })
}
