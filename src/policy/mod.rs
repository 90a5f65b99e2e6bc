//! Node and config policies in EdgeLake's shape, and their ids.

pub mod id;
pub mod render;
pub mod template;
