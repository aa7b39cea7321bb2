//! `#[wafer_sdk::transform]` and `#[derive(wafer_sdk::Outputs)]`. Use them
//! through `wafer-sdk`; the generated code refers to `::wafer_sdk`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::{
    parse_macro_input, Data, DeriveInput, Fields, FnArg, ItemFn, LitStr, Pat, ReturnType, Type,
};

/// Turns a pure function into a Wafer transform module (when built for
/// `wasm32-unknown-unknown`). `#[transform(output = "name")]` names a single
/// output; by default it is named after the function.
#[proc_macro_attribute]
pub fn transform(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = parse_macro_input!(attr as Options);
    let function = parse_macro_input!(item as ItemFn);
    match expand_transform(options, function) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// Each named field of the struct becomes one output of the transform.
#[proc_macro_derive(Outputs)]
pub fn derive_outputs(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as DeriveInput);
    match expand_outputs(input) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Options {
    output: Option<String>,
}

impl Parse for Options {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut options = Options::default();
        while !input.is_empty() {
            let key: syn::Ident = input.parse()?;
            input.parse::<syn::Token![=]>()?;
            let value: LitStr = input.parse()?;
            match key.to_string().as_str() {
                "output" => {
                    check_name(&value.value(), value.span())?;
                    options.output = Some(value.value());
                }
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown option `{other}` (expected `output = \"name\"`)"),
                    ))
                }
            }
            if !input.is_empty() {
                input.parse::<syn::Token![,]>()?;
            }
        }
        Ok(options)
    }
}

/// Names end up in JSON and in feature names: keep them plain.
fn check_name(name: &str, span: Span) -> syn::Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(syn::Error::new(
            span,
            format!("`{name}` is not a valid name: use letters, digits, `_` and `-`"),
        ))
    }
}

fn plain_name(ident: &syn::Ident) -> String {
    let name = ident.to_string();
    name.strip_prefix("r#").unwrap_or(&name).to_string()
}

/// Whether a return type is one output rather than a struct of outputs.
fn is_single_output(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path.path.segments.last().is_some_and(|segment| {
            matches!(
                segment.ident.to_string().as_str(),
                "bool" | "i32" | "i64" | "f32" | "f64" | "String" | "Vec" | "Option" | "Timestamp"
            )
        }),
        _ => false,
    }
}

/// The JSON pieces of one field of the schema: `{"name":..,"type":..,"nullable":..}`.
fn field_pieces(name: &str, trait_path: Tokens, ty: &Type) -> Tokens {
    let head = format!("{{\"name\":\"{name}\",\"type\":\"");
    quote! {
        #head.as_bytes(),
        <#ty as #trait_path>::TYPE.as_bytes(),
        b"\",\"nullable\":",
        ::wafer_sdk::__private::json_bool(<#ty as #trait_path>::NULLABLE),
        b"}",
    }
}

fn join_pieces(fields: Vec<Tokens>) -> Tokens {
    let mut out = Tokens::new();
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.extend(quote! { b",", });
        }
        out.extend(field);
    }
    out
}

fn expand_transform(options: Options, function: ItemFn) -> syn::Result<Tokens> {
    let sig = &function.sig;
    if let Some(token) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            token,
            "a transform cannot be async",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a transform cannot be generic",
        ));
    }
    let output_type = match &sig.output {
        ReturnType::Type(_, ty) => ty.as_ref().clone(),
        ReturnType::Default => return Err(syn::Error::new_spanned(
            sig,
            "a transform must return its output (a value, an Option, or a struct deriving Outputs)",
        )),
    };
    if let Type::Reference(reference) = &output_type {
        return Err(syn::Error::new_spanned(
            reference,
            "outputs must be owned values (String, Vec<u8>, ...), not references",
        ));
    }

    let mut input_names = Vec::new();
    let mut input_types = Vec::new();
    for arg in &sig.inputs {
        let FnArg::Typed(typed) = arg else {
            return Err(syn::Error::new_spanned(arg, "a transform cannot take self"));
        };
        let Pat::Ident(ident) = typed.pat.as_ref() else {
            return Err(syn::Error::new_spanned(
                &typed.pat,
                "name each parameter after its input feature or request field",
            ));
        };
        let name = plain_name(&ident.ident);
        check_name(&name, ident.ident.span())?;
        input_names.push(name);
        input_types.push(typed.ty.as_ref().clone());
    }

    let function_name = &sig.ident;
    let transform_name = plain_name(function_name);
    let n_inputs = input_types.len();

    let input_fields = input_names
        .iter()
        .zip(&input_types)
        .map(|(name, ty)| field_pieces(name, quote!(::wafer_sdk::Param<'static>), ty))
        .collect();
    let input_pieces = join_pieces(input_fields);

    let single = is_single_output(&output_type);
    let (n_outputs, output_pieces, element_widths, write_result) = if single {
        let name = options
            .output
            .clone()
            .unwrap_or_else(|| transform_name.clone());
        let pieces = field_pieces(&name, quote!(::wafer_sdk::OutputValue), &output_type);
        (
            quote!(1usize),
            quote!(b"[", #pieces b"]",),
            quote!(&[<#output_type as ::wafer_sdk::OutputValue>::ELEMENT_WIDTH]),
            quote!(::wafer_sdk::OutputValue::write(result, &mut outputs[0], row);),
        )
    } else {
        if options.output.is_some() {
            return Err(syn::Error::new_spanned(
                &output_type,
                "`output = ...` names a single output; a struct's outputs are named by its fields",
            ));
        }
        (
            quote!(<#output_type as ::wafer_sdk::Outputs>::COUNT),
            quote!(<#output_type as ::wafer_sdk::Outputs>::SCHEMA,),
            quote!(<#output_type as ::wafer_sdk::Outputs>::ELEMENT_WIDTHS),
            quote!(::wafer_sdk::Outputs::write(result, &mut outputs, row);),
        )
    };

    let header = format!("{{\"abi\":1,\"name\":\"{transform_name}\",\"sdk\":\"rust/");
    let columns: Vec<_> = (0..n_inputs).map(|i| format_ident!("column_{i}")).collect();
    let values: Vec<_> = (0..n_inputs).map(|i| format_ident!("value_{i}")).collect();
    let indexes: Vec<_> = (0..n_inputs).collect();

    Ok(quote! {
        #[allow(dead_code)]
        #function

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            const PIECES: &[&[u8]] = &[
                #header.as_bytes(),
                ::wafer_sdk::__private::SDK_VERSION.as_bytes(),
                b"\",\"inputs\":[",
                #input_pieces
                b"],\"outputs\":",
                #output_pieces
                b"}",
            ];
            const LEN: usize = ::wafer_sdk::__private::total_len(PIECES);
            #[unsafe(link_section = "wafer.schema")]
            #[used]
            static WAFER_SCHEMA: [u8; LEN] = ::wafer_sdk::__private::concat::<LEN>(PIECES);

            #[unsafe(no_mangle)]
            pub extern "C" fn wafer_abi_v1() {}

            #[unsafe(no_mangle)]
            pub extern "C" fn wafer_alloc(size: u32, align: u32) -> u32 {
                ::wafer_sdk::__private::alloc(size, align)
            }

            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn wafer_transform(descriptor: u32) -> i32 {
                ::wafer_sdk::__private::install_panic_hook();
                let batch = match ::wafer_sdk::__private::Batch::open(descriptor, #n_inputs, #n_outputs) {
                    Ok(batch) => batch,
                    Err(code) => return code,
                };
                #( let #columns = batch.input(#indexes); )*
                const WIDTHS: &[usize] = #element_widths;
                let mut outputs: [::wafer_sdk::__private::OutputColumn; #n_outputs] =
                    ::core::array::from_fn(|i| batch.output(i, WIDTHS[i]));
                for row in 0..batch.rows() {
                    ::wafer_sdk::__private::set_row(row);
                    #(
                        let #values = match <#input_types as ::wafer_sdk::Param<'_>>::get(&#columns, row) {
                            Some(value) => value,
                            None => {
                                ::wafer_sdk::__private::null_row(&mut outputs, row);
                                continue;
                            }
                        };
                    )*
                    let result = #function_name(#(#values),*);
                    #write_result
                }
                batch.finish(&mut outputs);
                ::wafer_sdk::__private::OK
            }
        };
    })
}

fn expand_outputs(input: DeriveInput) -> syn::Result<Tokens> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "an Outputs struct cannot be generic",
        ));
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input,
            "Outputs derives only for structs with named fields",
        ));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(
            &data.fields,
            "Outputs derives only for structs with named fields",
        ));
    };
    let mut pieces = Vec::new();
    let mut types = Vec::new();
    let mut idents = Vec::new();
    for field in &fields.named {
        let ident = field.ident.as_ref().expect("named field");
        let field_name = plain_name(ident);
        check_name(&field_name, ident.span())?;
        pieces.push(field_pieces(
            &field_name,
            quote!(::wafer_sdk::OutputValue),
            &field.ty,
        ));
        types.push(field.ty.clone());
        idents.push(ident.clone());
    }
    if idents.is_empty() {
        return Err(syn::Error::new_spanned(
            &input,
            "an Outputs struct needs at least one field",
        ));
    }
    let count = idents.len();
    let indexes: Vec<_> = (0..count).collect();
    let joined = join_pieces(pieces);
    Ok(quote! {
        impl ::wafer_sdk::Outputs for #name {
            const SCHEMA: &'static [u8] = {
                const PIECES: &[&[u8]] = &[b"[", #joined b"]"];
                const LEN: usize = ::wafer_sdk::__private::total_len(PIECES);
                const BYTES: [u8; LEN] = ::wafer_sdk::__private::concat::<LEN>(PIECES);
                &BYTES
            };
            const COUNT: usize = #count;
            const ELEMENT_WIDTHS: &'static [usize] =
                &[#(<#types as ::wafer_sdk::OutputValue>::ELEMENT_WIDTH),*];
            fn write(self, columns: &mut [::wafer_sdk::__private::OutputColumn], row: usize) {
                #( ::wafer_sdk::OutputValue::write(self.#idents, &mut columns[#indexes], row); )*
            }
        }
    })
}
