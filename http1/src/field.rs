//! Field lines as slices of the input buffer, and allocation-free lookups over them.

/// One field line: name and value are slices of the buffer the head was parsed from.
///
/// The value has its surrounding whitespace removed (RFC 9112 5.1) and is otherwise untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'b> {
    /// The field name, a token, in the letter case the peer sent.
    pub name: &'b [u8],
    /// The field value without leading or trailing whitespace.
    pub value: &'b [u8],
}

impl<'b> Field<'b> {
    /// An empty field, for initialising the caller's field array.
    pub const EMPTY: Field<'static> = Field {
        name: b"",
        value: b"",
    };

    /// Whether this field's name equals `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// The fields of one head, with case-insensitive lookups that allocate nothing.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'f, 'b> {
    fields: &'f [Field<'b>],
}

impl<'f, 'b> Fields<'f, 'b> {
    /// Wraps parsed fields.
    pub fn new(fields: &'f [Field<'b>]) -> Self {
        Fields { fields }
    }

    /// The value of the first field called `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&'b [u8]> {
        self.fields.iter().find(|f| f.is(name)).map(|f| f.value)
    }

    /// The values of every field called `name`, in order.
    pub fn get_all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'b [u8]> + use<'f, 'b, 'n> {
        self.fields
            .iter()
            .filter(move |f| f.is(name))
            .map(|f| f.value)
    }

    /// Whether any comma-separated element of any `name` field equals `token`, ignoring case.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            crate::chars::list_elements(v).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// All fields, in the order received.
    pub fn as_slice(&self) -> &'f [Field<'b>] {
        self.fields
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}
