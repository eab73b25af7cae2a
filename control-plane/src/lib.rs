//! berth's compact control plane (issue 4, in progress): what exists is [`store`], the embedded
//! MVCC key-value store every API object will live in. The API server, scheduler and controllers
//! come next (see `RESEARCH.md` beside this crate for the plan and the facts it rests on).

pub mod store;
