/** Registries: pull and push images over the OCI distribution API; the auth file login and logout keep. */
export { pullImage, parsePlatform, plainHttpFor } from './pull.js';
export type { PullOptions, PullProgress, PulledImage, Platform, RegistryOptions } from './pull.js';
export { pushImage } from './push.js';
export type { PushOptions, PushProgress, PushedImage, PushedBlob } from './push.js';
export { authFilePath, parseCreds, removeCredentials, storeCredentials, storedCredentials } from './auth.js';
export type { Credentials } from './auth.js';
export { RegistryClient } from './client.js';
export { parseReference, formatReference } from './reference.js';
export type { ImageReference } from './reference.js';
