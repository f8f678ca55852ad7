//! `op_family!`: an operator family written once. From one list of methods (signature, reference
//! function, [`Op`](super::Op)) it makes the family trait, the [`Cpu`](super::Cpu) implementation (each
//! method calls its reference) and the [`Fallback`](super::Fallback) implementation (each method tries
//! the primary, then the secondary: `Fallback::route`), so an operator's signature is written once.
//!
//! Every method is generic over `T: Float` and returns `Result<ret>`. A first argument written
//! `&mut name: Type` is taken as `name: &mut Type` (the primary gets a reborrow, the secondary the
//! argument); the primary gets clones of the others (views and references: the same data). A method
//! may name a trait default with `default path`: the trait's body is then `path(self, args...)`.

macro_rules! op_family {
    (
        $(#[$family_meta:meta])*
        pub trait $family:ident {
            $(
                $(#[$meta:meta])*
                fn $name:ident(
                    $(&mut $marg:ident: $mty:ty,)?
                    $($arg:ident: $ty:ty),* $(,)?
                ) -> $ret:ty = $reference:path, $op:ident $(, default $default:path)?;
            )*
        }
    ) => {
        $(#[$family_meta])*
        pub trait $family: $crate::backend::Backend {
            $(
                op_family!(
                    @trait_fn [$(#[$meta])*] $name ($($marg: &mut $mty,)? $($arg: $ty),*) -> $ret;
                    $($default)?
                );
            )*
        }

        impl $family for $crate::backend::Cpu {
            $(
                fn $name<T: $crate::Float>(
                    &self,
                    $($marg: &mut $mty,)?
                    $($arg: $ty),*
                ) -> $crate::Result<$ret> {
                    $reference($($marg,)? $($arg),*)
                }
            )*
        }

        impl<P: $family, S: $family> $family for $crate::backend::Fallback<P, S> {
            $(
                fn $name<T: $crate::Float>(
                    &self,
                    $($marg: &mut $mty,)?
                    $($arg: $ty),*
                ) -> $crate::Result<$ret> {
                    let before = $crate::backend::fallback::OpTransfers::now();
                    self.route(
                        $crate::backend::Op::$op,
                        before,
                        self.primary()
                            .$name($(&mut *$marg,)? $(<$ty as Clone>::clone(&$arg)),*),
                        |b| b.$name($($marg,)? $($arg),*),
                    )
                }
            )*
        }
    };

    (@trait_fn [$(#[$meta:meta])*] $name:ident ($($arg:ident: $ty:ty),*) -> $ret:ty;) => {
        $(#[$meta])*
        fn $name<T: $crate::Float>(&self, $($arg: $ty),*) -> $crate::Result<$ret>;
    };

    (
        @trait_fn [$(#[$meta:meta])*] $name:ident ($($arg:ident: $ty:ty),*) -> $ret:ty;
        $default:path
    ) => {
        $(#[$meta])*
        fn $name<T: $crate::Float>(&self, $($arg: $ty),*) -> $crate::Result<$ret> {
            $default(self, $($arg),*)
        }
    };
}
pub(super) use op_family;
