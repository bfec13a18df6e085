/** LFS_OID is a Git LFS object id: the SHA-256 of the object's content, in lower-case hex. */
export const LFS_OID = /^[0-9a-f]{64}$/;

/** INCARNATION_ID is what a repository's incarnation id looks like (a UUID): it names directories (LFS objects, backups). */
export const INCARNATION_ID = /^[0-9A-Za-z][0-9A-Za-z-]{0,63}$/;
