#![no_std]
// Empty on purpose: the programs live in the `udptrace` binary target. The library exists so that the
// user-space crate can name this package as a build-dependency.
