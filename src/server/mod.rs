//! HTTP only: accept loops and connections (`http`), the hook handler
//! (`routes`), the admin endpoints and the status views (`admin`), body
//! reading (`body`), and which socket serves what (`listen`).

pub mod admin;
pub mod body;
pub mod http;
pub mod listen;
pub mod routes;
