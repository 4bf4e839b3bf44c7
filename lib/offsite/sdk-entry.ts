// The part of the AWS SDK the off-site client uses, and the entry of its own bundle: the build
// makes this module aws-sdk.cjs, an asset of the executable, so the SDK (0.6 MB minified) is
// not part of the main bundle every start reads (lib/offsite/sdk.ts loads it).
export {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
