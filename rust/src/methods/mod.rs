//! The merge methods, one module each, named after the method it declares (`pub(crate) static METHOD`).
//! `build.rs` finds them: adding a method is adding its file here.

include!(concat!(env!("OUT_DIR"), "/methods.rs"));
