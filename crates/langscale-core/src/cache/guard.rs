//! PLACEHOLDER (helper-3 replaces this file): the guard against false semantic hits.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Number,
    Date,
    Quoted,
    Entity,
    Negation,
}

impl Conflict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Date => "date",
            Self::Quoted => "quoted",
            Self::Entity => "entity",
            Self::Negation => "negation",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Signature {
    numbers: Vec<String>,
}

impl Signature {
    pub fn of(text: &str) -> Self {
        let numbers = text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Self { numbers }
    }

    pub fn conflict(&self, other: &Signature) -> Option<Conflict> {
        (self.numbers != other.numbers).then_some(Conflict::Number)
    }
}
