//! One integration-test binary (one link) with a module per concern.

mod anatomy;
mod calibration;
mod common;
mod compare;
mod endpoints;
mod evidence;
mod exit_codes;
mod failclosed;
mod formats;
mod hostile;
mod html;
mod integrity;
mod ledger;
mod limits;
mod poison;
mod power;
mod power_rest;
mod ranges;
mod reference;
mod registry;
mod remedy;
mod s3;
mod schemas;
mod sharding;
mod stitched;
mod streaming;
