//! The Kubernetes resources Weft's control plane reads, as Rust types, and
//! the CustomResourceDefinitions generated from them.
//!
//! This crate owns the model and nothing else (no client, no controller):
//! Istio's `networking.istio.io` kinds Gateway, VirtualService,
//! DestinationRule, ServiceEntry and WorkloadEntry (served in `v1`,
//! `v1beta1` and `v1alpha3` with one schema, `v1` stored, as current Istio
//! does), `extensions.istio.io/v1alpha1` WasmPlugin, and Weft's own
//! cluster-scoped singleton `weft.dev/v1alpha1` Mesh. Field names, enums
//! and `oneof`s are Istio's, every field of Istio's schema is modelled (the
//! API server would silently prune one that is not), and specs refuse
//! unknown fields so a typo is an error, not a no-op. Every kind carries
//! the shared [`status::Status`].
//!
//! ```text
//!  Rust types ──kube-derive + schemars──► crd::all() ──crdgen──► crds/crds.gen.yaml
//!  (networking, extensions, mesh)                                (checked in; a test
//!        ▲                                                        fails on drift)
//!  YAML ──document::from_yaml──► Resource (typed, unknown fields refused)
//! ```
//!
//! `make crds` regenerates `crds/crds.gen.yaml` with the `crdgen` binary.

pub mod common;
pub mod crd;
pub mod document;
pub mod extensions;
pub mod mesh;
pub mod networking;
pub mod status;

pub use document::{from_yaml, DocumentError, Resource};
