//! `string_enum!`: enums spelled on the wire as strings, parsed with field-naming errors.

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $(#[serde(rename = $s)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            /// Parses the wire spelling; the error names `field` and lists the valid values.
            pub fn parse(field: &str, s: &str) -> Result<Self, $crate::validate::ValidationError> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err($crate::validate::ValidationError::new(field, format!(
                        "'{}' is not a valid {}; expected one of: {}",
                        s, $what, [$($s),+].join(", ")
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
