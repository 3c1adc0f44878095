//! The gRPC services. Each translates protobuf to calls on the broker's
//! domain modules (`data_path`, `admin`, `groups`, `groups::share`) and their results back to
//! protobuf; none holds logic of its own.

mod access;
mod acls;
pub mod admin;
pub mod auth;
pub mod groups;
pub mod peer;
mod records;
pub mod share;
pub mod strand;
mod users;

pub use admin::AdminService;
pub use auth::AuthService;
pub use groups::GroupsService;
pub use peer::PeerService;
pub use share::ShareGroupsService;
pub use strand::StrandService;
