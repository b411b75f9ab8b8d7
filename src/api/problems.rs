//! The problems of one request, for one 422: the first
//! [`VALIDATION_ERRORS_MAX`] listed, the rest only counted.
//!
//! A request may have any number of problems (30 000 unknown query
//! parameters, 20 000 bad tokens in a batch); answering each would make the
//! answer larger than the request. So a 422 lists at most
//! `VALIDATION_ERRORS_MAX` entries and says how many more there were
//! (`validationErrorsOmitted`). The count stays exact: problems past the
//! cap are counted, not dropped, and callers can count them without
//! writing their messages ([`Problems::count`]).

use super::error::FieldError;

/// Most `validationErrors` entries of one 422.
pub const VALIDATION_ERRORS_MAX: usize = 100;

/// The problems found so far in one request.
#[derive(Debug, Default)]
pub struct Problems {
    /// The first problems, in the order found; at most
    /// [`VALIDATION_ERRORS_MAX`].
    listed: Vec<FieldError>,
    /// How many more were found and not listed.
    omitted: usize,
}

impl Problems {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes `problem`: listed while there is room, else counted.
    pub fn push(&mut self, problem: FieldError) {
        if self.is_full() {
            self.omitted += 1;
        } else {
            self.listed.push(problem);
        }
    }

    /// Notes the problem `make` describes, calling it only when the problem
    /// is listed.
    pub fn push_with(&mut self, make: impl FnOnce() -> FieldError) {
        if self.is_full() {
            self.omitted += 1;
        } else {
            self.listed.push(make());
        }
    }

    /// Notes every problem of `problems`, in order.
    pub fn extend(&mut self, problems: impl IntoIterator<Item = FieldError>) {
        for problem in problems {
            self.push(problem);
        }
    }

    /// Notes the problems of `other` after these, in order.
    pub fn append(&mut self, other: Problems) {
        let (listed, omitted) = other.into_parts();
        self.extend(listed);
        self.omitted += omitted;
    }

    /// Counts `n` more problems that cannot be listed any more: only valid
    /// once [`is_full`](Self::is_full).
    pub fn count(&mut self, n: usize) {
        assert!(self.is_full(), "problems are counted only past the cap");
        self.omitted += n;
    }

    /// Whether no more problems will be listed (more are only counted).
    pub fn is_full(&self) -> bool {
        self.listed.len() >= VALIDATION_ERRORS_MAX
    }

    /// How many problems were noted, listed or not.
    pub fn len(&self) -> usize {
        self.listed.len() + self.omitted
    }

    /// Whether none was noted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The problems listed so far (at most [`VALIDATION_ERRORS_MAX`]).
    pub fn listed(&self) -> &[FieldError] {
        &self.listed
    }

    /// The listed problems and how many more were noted.
    pub fn into_parts(self) -> (Vec<FieldError>, usize) {
        debug_assert!(self.listed.len() <= VALIDATION_ERRORS_MAX);
        (self.listed, self.omitted)
    }
}

impl From<Vec<FieldError>> for Problems {
    fn from(problems: Vec<FieldError>) -> Self {
        let mut collected = Problems::new();
        collected.extend(problems);
        collected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_up_to_the_cap_and_counts_the_rest() {
        let mut problems = Problems::new();
        assert!(problems.is_empty());
        for i in 0..VALIDATION_ERRORS_MAX + 5 {
            problems.push(FieldError::new(format!("$.p{i}"), "bad"));
        }
        let mut made = 0;
        problems.push_with(|| {
            made += 1;
            FieldError::new("$.x", "bad")
        });
        assert_eq!(made, 0, "a problem past the cap is not written");
        problems.count(10);
        assert_eq!(problems.len(), VALIDATION_ERRORS_MAX + 16);
        let (listed, omitted) = problems.into_parts();
        assert_eq!(listed.len(), VALIDATION_ERRORS_MAX);
        assert_eq!(listed[0].path, "$.p0");
        assert_eq!(omitted, 16);
    }

    #[test]
    fn appended_problems_keep_their_order_and_count() {
        let mut first = Problems::new();
        for i in 0..60 {
            first.push(FieldError::new(format!("$.a{i}"), "bad"));
        }
        let mut second = Problems::new();
        for i in 0..VALIDATION_ERRORS_MAX + 7 {
            second.push(FieldError::new(format!("$.b{i}"), "bad"));
        }
        first.append(second);
        assert_eq!(first.len(), 60 + VALIDATION_ERRORS_MAX + 7);
        let (listed, omitted) = first.into_parts();
        assert_eq!(listed[59].path, "$.a59");
        assert_eq!(listed[60].path, "$.b0");
        assert_eq!(listed[99].path, "$.b39");
        assert_eq!(omitted, 67);
    }

    #[test]
    fn a_short_list_omits_nothing() {
        let problems = Problems::from(vec![FieldError::new("$.a", "bad")]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems.into_parts().1, 0);
    }
}
