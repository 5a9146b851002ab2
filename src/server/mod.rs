//! HTTP only: accept loops and connections (`http`), the hook handler
//! (`routes`), the admin endpoints and the status views (`admin`), body
//! reading (`body`), which socket serves what (`listen`), and the events
//! console (`ui`).

pub mod admin;
pub mod body;
pub mod http;
pub mod listen;
pub mod routes;
pub mod ui;
