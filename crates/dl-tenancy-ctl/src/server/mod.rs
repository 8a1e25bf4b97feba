//! Layer 4 (beside `control`, never importing it): one PostgreSQL server as the platform
//! sees it. Catalog checks, roles and their access, archives (pg_dump/pg_restore), counts,
//! logical streams between servers, the pooler's files and console, the local cluster,
//! pgBackRest (continuous archiving; an added server's repository settings) and the scratch
//! clusters a point-in-time restore uses.

pub mod apply;
pub mod archive;
pub mod archiver;
pub mod backrest;
pub mod catalog;
pub mod cluster;
pub mod counts;
pub mod pooler;
pub mod repos;
pub mod roles;
pub mod scratch;
pub mod stream;
