//! The Agentic Operator: runs AgenticSession custom resources as Kubernetes Jobs.
