//! RBAC roles and bindings: no rules of their own at write time (the authorizer reads them, see
//! `api/rbac.rs`).

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

use super::Plain;

/// rbac.authorization.k8s.io/v1 ClusterRoles.
pub const CLUSTER_ROLES: Plain<ClusterRole> = Plain::new();
/// rbac.authorization.k8s.io/v1 ClusterRoleBindings.
pub const CLUSTER_ROLE_BINDINGS: Plain<ClusterRoleBinding> = Plain::new();
/// rbac.authorization.k8s.io/v1 Roles.
pub const ROLES: Plain<Role> = Plain::new();
/// rbac.authorization.k8s.io/v1 RoleBindings.
pub const ROLE_BINDINGS: Plain<RoleBinding> = Plain::new();
