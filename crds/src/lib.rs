//! AgenticSession and ProjectSettings custom resource types and the names shared with them.
