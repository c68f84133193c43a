//! What every program is: a stub per attach mode around a body the modes share, declared with its name
//! written once.

/// Programs, each a stub of one attach mode around a body the modes share: the attach attribute, then
/// `fn name(ctx: Context) { body }`, `body` being the program's `ReadResult<()>`. Each becomes
/// `pub fn name(ctx: Context) -> u32`, the name written once: it is the program's (the symbol user space
/// finds and attaches it by) and the one a failed read is logged with (`output::report`). The attach macros
/// discard the return value and return 0 to the kernel.
macro_rules! programs {
    ($($(#[$attr:meta])* fn $name:ident($ctx:ident: $context:ty) $body:block)*) => {
        $(
            $(#[$attr])*
            pub fn $name($ctx: $context) -> u32 {
                let result: $crate::kernel::ReadResult<()> = $body;
                $crate::output::report(&$ctx, stringify!($name), result)
            }
        )*
    };
}
pub(crate) use programs;
