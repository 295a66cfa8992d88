//! weft-bookinfo's integration tests: the four services on loopback ports,
//! talking to each other (or to recording fakes) as they do in the mesh.

mod http_proxy;
mod productpage;
mod propagation;
mod services;
mod support;
