pub mod deploy;
pub mod farm;
