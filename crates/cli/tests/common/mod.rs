pub mod admin;
pub mod deploy;
pub mod farm;
