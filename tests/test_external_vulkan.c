/* smoe_context_open_vulkan_external: the test plays an application with its own Vulkan instance
 * and device (through the loader, dlopen'ed here, with the validation layer and a messenger of its
 * own when SOFTMOE_VALIDATION asks for it) and a graphics+compute queue it also submits to from
 * another thread, under the queue lock it hands to softmoe. softmoe runs inference on that device:
 * the logits equal those of softmoe's own device; softmoe calls vkCreateInstance and vkCreateDevice
 * never (counted by a wrapper of vkGetInstanceProcAddr); the validation layer reports nothing;
 * softmoe is destroyed first, then the application destroys its device and instance, which works
 * only if softmoe left nothing of its own on them (the layer reports leaked objects). Bad
 * arguments fail with a status and leave the context able to open a device. */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <vulkan/vulkan.h>

#include "test_vk.h"

static const char *golden_dir;

/* ---- the application's Vulkan ---- */

static PFN_vkGetInstanceProcAddr real_gipa;
static int create_instance_calls, create_device_calls, app_messages;
static pthread_mutex_t queue_mutex = PTHREAD_MUTEX_INITIALIZER;
static int lock_calls, unlock_calls;

static VKAPI_ATTR VkResult VKAPI_CALL counting_create_instance(const VkInstanceCreateInfo *ci, const VkAllocationCallbacks *a,
                                                               VkInstance *out)
{
    create_instance_calls++;
    PFN_vkCreateInstance f = (PFN_vkCreateInstance)real_gipa(VK_NULL_HANDLE, "vkCreateInstance");
    return f(ci, a, out);
}

static VkInstance app_instance;

static VKAPI_ATTR VkResult VKAPI_CALL counting_create_device(VkPhysicalDevice pd, const VkDeviceCreateInfo *ci,
                                                             const VkAllocationCallbacks *a, VkDevice *out)
{
    create_device_calls++;
    PFN_vkCreateDevice f = (PFN_vkCreateDevice)real_gipa(app_instance, "vkCreateDevice");
    return f(pd, ci, a, out);
}

/* What softmoe gets as vkGetInstanceProcAddr. */
static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL counting_gipa(VkInstance instance, const char *name)
{
    if (!strcmp(name, "vkCreateInstance")) return (PFN_vkVoidFunction)counting_create_instance;
    if (!strcmp(name, "vkCreateDevice")) return (PFN_vkVoidFunction)counting_create_device;
    return real_gipa(instance, name);
}

static void lock(void *user)
{
    CHECK(user == &queue_mutex);
    pthread_mutex_lock(&queue_mutex);
    lock_calls++;
}

static void unlock(void *user)
{
    unlock_calls++;
    pthread_mutex_unlock(user);
}

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                 VkDebugUtilsMessageTypeFlagsEXT type,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    (void)type, (void)user;
    if (severity & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)) {
        app_messages++;
        fprintf(stderr, "  [validation] %s\n", data->pMessage);
    }
    return VK_FALSE;
}

/* The application's renderer: submits (empty batches with a fence) to the shared queue from its
 * own thread, under the same lock, until told to stop. */
typedef struct renderer {
    VkDevice device;
    VkQueue queue;
    PFN_vkQueueSubmit submit;
    PFN_vkWaitForFences wait;
    PFN_vkResetFences reset;
    VkFence fence;
    atomic_int stop;
    int frames;
} renderer;

static void *render_thread(void *arg)
{
    renderer *r = arg;
    while (!r->stop) {
        pthread_mutex_lock(&queue_mutex);
        VkResult res = r->submit(r->queue, 0, NULL, r->fence);
        pthread_mutex_unlock(&queue_mutex);
        if (res != VK_SUCCESS) break;
        r->wait(r->device, 1, &r->fence, VK_TRUE, UINT64_MAX);
        r->reset(r->device, 1, &r->fence);
        r->frames++;
    }
    return NULL;
}

/* ---- softmoe on it ---- */

static void infer_golden(smoe_context *ctx, float *logits, int *count)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/vit_d32_L2_b3.model.safetensors", golden_dir);
    smoe_model *m = NULL;
    CHECK_MSG(smoe_model_load_file(ctx, path, &m) == SMOE_OK, "%s", smoe_last_error(ctx));
    if (!m) return;
    smoe_vit_config c;
    smoe_vit_get_config(m, &c);
    enum { B = 6 };
    int per = c.channels * c.image_size * c.image_size;
    float *images = malloc((size_t)B * per * 4);
    uint64_t seed = 77;
    for (int i = 0; i < B * per; i++) images[i] = 0.5f * (test_rand(&seed) + 1.0f);
    CHECK_MSG(smoe_vit_infer(m, B, images, logits) == SMOE_OK, "%s", smoe_last_error(ctx));
    /* the asynchronous path too, polled */
    float *again = malloc((size_t)B * c.num_classes * 4);
    smoe_job *job = NULL;
    CHECK(smoe_vit_infer_async(m, B, images, again, &job) == SMOE_OK);
    smoe_status st;
    while ((st = smoe_job_poll(job)) == SMOE_NOT_READY) {
    }
    CHECK(st == SMOE_OK && test_rel_err(again, logits, (size_t)B * c.num_classes) == 0);
    smoe_job_free(job);
    /* and a Soft MoE layer model, forward */
    smoe_model *layer = NULL;
    snprintf(path, sizeof path, "%s/layer_b2_m16_d32_n4_p2_h64.model.safetensors", golden_dir);
    CHECK(smoe_model_load_file(ctx, path, &layer) == SMOE_OK);
    float x[2 * 16 * 32], y[2 * 16 * 32];
    for (int i = 0; i < 2 * 16 * 32; i++) x[i] = test_rand(&seed);
    CHECK(layer && smoe_layer_forward(layer, 2, 16, x, y) == SMOE_OK);
    memcpy(logits + (size_t)B * c.num_classes, y, sizeof y);
    *count = B * c.num_classes + 2 * 16 * 32;
    free(images);
    free(again);
}

int main(int argc, char **argv)
{
    golden_dir = argc > 1 ? argv[1] : "tests/golden";
    static float want[8192], got[8192];
    int n_want = 0, n_got = 0;

    /* softmoe's own device, for reference and to know which device to pick */
    smoe_device_info own;
    smoe_context *ref = test_open("vulkan");
    if (!ref) return test_finish("test_external_vulkan");
    CHECK(smoe_context_device(ref, &own, NULL) == SMOE_OK);
    infer_golden(ref, want, &n_want);
    test_close(ref);

    void *loader = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    CHECK_MSG(loader != NULL, "no Vulkan loader");
    if (!loader) return test_finish("test_external_vulkan");
    real_gipa = (PFN_vkGetInstanceProcAddr)dlsym(loader, "vkGetInstanceProcAddr");
#define G(name) PFN_##name name = (PFN_##name)real_gipa(app_instance, #name)
    G(vkCreateInstance);
    const char *v = getenv("SOFTMOE_VALIDATION");
    int validate = v && v[0] && strcmp(v, "0");
    const char *layer = "VK_LAYER_KHRONOS_validation", *ext = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    VkValidationFeatureEnableEXT sync = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    VkDebugUtilsMessengerCreateInfoEXT mci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = on_message,
    };
    VkValidationFeaturesEXT features = {.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
                                        .pNext = &mci,
                                        .enabledValidationFeatureCount = !strcmp(v ? v : "", "sync"),
                                        .pEnabledValidationFeatures = &sync};
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "test_external_vulkan",
                             .apiVersion = VK_API_VERSION_1_1};
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                .pNext = validate ? &features : NULL,
                                .pApplicationInfo = &app,
                                .enabledLayerCount = validate ? 1 : 0,
                                .ppEnabledLayerNames = &layer,
                                .enabledExtensionCount = validate ? 1 : 0,
                                .ppEnabledExtensionNames = &ext};
    VkResult r = vkCreateInstance(&ici, NULL, &app_instance);
    CHECK_MSG(r == VK_SUCCESS, "vkCreateInstance: %d", r);
    if (r != VK_SUCCESS) return test_finish("test_external_vulkan");
    G(vkDestroyInstance);
    G(vkCreateDebugUtilsMessengerEXT);
    G(vkDestroyDebugUtilsMessengerEXT);
    G(vkEnumeratePhysicalDevices);
    G(vkGetPhysicalDeviceProperties);
    G(vkGetPhysicalDeviceQueueFamilyProperties);
    G(vkCreateDevice);
    G(vkGetDeviceProcAddr);
    VkDebugUtilsMessengerEXT messenger = VK_NULL_HANDLE;
    if (validate) CHECK(vkCreateDebugUtilsMessengerEXT(app_instance, &mci, NULL, &messenger) == VK_SUCCESS);

    /* the physical device softmoe's "vulkan" picked, and a graphics+compute family on it, as a
     * renderer would use */
    VkPhysicalDevice pds[16], pd = VK_NULL_HANDLE;
    uint32_t n = 16;
    vkEnumeratePhysicalDevices(app_instance, &n, pds);
    for (uint32_t i = 0; i < n && !pd; i++) {
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(pds[i], &p);
        if (!strcmp(p.deviceName, own.name) && p.deviceID == own.device_id) pd = pds[i];
    }
    CHECK_MSG(pd != VK_NULL_HANDLE, "the application instance does not list %s", own.name);
    if (!pd) return test_finish("test_external_vulkan");
    VkQueueFamilyProperties fam[16];
    uint32_t nf = 16, family = UINT32_MAX;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nf, fam);
    for (uint32_t i = 0; i < nf; i++)
        if ((fam[i].queueFlags & VK_QUEUE_COMPUTE_BIT) &&
            (family == UINT32_MAX || (fam[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)))
            family = i;
    CHECK(family != UINT32_MAX);
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = family,
                                   .queueCount = 1,
                                   .pQueuePriorities = &prio};
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci};
    VkDevice device = VK_NULL_HANDLE;
    CHECK(vkCreateDevice(pd, &dci, NULL, &device) == VK_SUCCESS);
    if (!device) return test_finish("test_external_vulkan");
#define D(name) PFN_##name name = (PFN_##name)vkGetDeviceProcAddr(device, #name)
    D(vkGetDeviceQueue);
    D(vkDestroyDevice);
    D(vkQueueSubmit);
    D(vkWaitForFences);
    D(vkResetFences);
    D(vkCreateFence);
    D(vkDestroyFence);
    D(vkDeviceWaitIdle);
    VkQueue queue = VK_NULL_HANDLE;
    vkGetDeviceQueue(device, family, 0, &queue);
    if (validate) { /* the messenger is live: a deliberate error (a wrong sType) is reported */
        VkFenceCreateInfo wrong = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
        VkFence f = VK_NULL_HANDLE;
        fprintf(stderr, "  (a deliberate validation error follows)\n");
        if (vkCreateFence(device, &wrong, NULL, &f) == VK_SUCCESS && f) vkDestroyFence(device, f, NULL);
        CHECK_MSG(app_messages > 0, "the validation layer did not report a deliberate error");
        app_messages = 0;
    }

    smoe_vulkan_external x = {
        .struct_size = sizeof x,
        .get_instance_proc_addr = (smoe_vk_get_instance_proc_addr)counting_gipa,
        .instance = app_instance,
        .physical_device = pd,
        .device = device,
        .queue_family_index = family,
        .queue = queue,
        .queue_lock = lock,
        .queue_unlock = unlock,
        .queue_lock_user = &queue_mutex,
    };
    smoe_context *ctx = NULL;
    CHECK(smoe_context_create(&ctx) == SMOE_OK);
    smoe_set_log_callback(ctx, test_log, NULL);

    /* refusals leave the context able to open the device */
    smoe_vulkan_external bad = x;
    bad.struct_size = 0;
    CHECK(smoe_context_open_vulkan_external(ctx, &bad) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(smoe_last_error(ctx), "struct_size") != NULL);
    bad = x;
    bad.device = NULL;
    CHECK(smoe_context_open_vulkan_external(ctx, &bad) == SMOE_ERROR_INVALID_ARGUMENT);
    bad = x;
    bad.queue_unlock = NULL;
    CHECK(smoe_context_open_vulkan_external(ctx, &bad) == SMOE_ERROR_INVALID_ARGUMENT);
    bad = x;
    bad.queue_family_index = nf + 3;
    CHECK(smoe_context_open_vulkan_external(ctx, &bad) == SMOE_ERROR_UNSUPPORTED);
    CHECK(smoe_context_open_vulkan_external(ctx, NULL) == SMOE_ERROR_INVALID_ARGUMENT);

    renderer rd = {.device = device, .queue = queue, .submit = vkQueueSubmit, .wait = vkWaitForFences, .reset = vkResetFences};
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    CHECK(vkCreateFence(device, &fci, NULL, &rd.fence) == VK_SUCCESS);
    pthread_t render;
    CHECK(pthread_create(&render, NULL, render_thread, &rd) == 0);

    smoe_status st = smoe_context_open_vulkan_external(ctx, &x);
    CHECK_MSG(st == SMOE_OK, "%s", smoe_last_error(ctx));
    if (!st) {
        CHECK(smoe_context_open_vulkan_external(ctx, &x) == SMOE_ERROR_INVALID_ARGUMENT); /* opened once */
        CHECK(smoe_context_open_device(ctx, "cpu") == SMOE_ERROR_INVALID_ARGUMENT);
        smoe_device_info info;
        const char *reason = NULL;
        CHECK(smoe_context_device(ctx, &info, &reason) == SMOE_OK);
        CHECK(!strcmp(info.name, own.name) && info.index == 0 && info.kind == own.kind);
        CHECK(reason && strstr(reason, "application") != NULL);
        int count = 0;
        CHECK(smoe_device_count(ctx, &count) == SMOE_OK && count == 2);
        infer_golden(ctx, got, &n_got);
        CHECK(n_got == n_want && n_got > 0);
        double e = test_rel_err(got, want, (size_t)n_want);
        CHECK_MSG(e == 0, "logits and layer outputs on the application's device differ from softmoe's own by %.3g", e);
        printf("  inference on the application's device (%s, queue family %u): %d values equal to softmoe's own "
               "device's\n", info.name, family, n_got);
    }
    smoe_context_destroy(ctx); /* softmoe goes first */
    rd.stop = 1;
    pthread_join(render, NULL);

    CHECK_MSG(create_instance_calls == 0 && create_device_calls == 0,
              "softmoe created %d instance(s) and %d device(s) of its own", create_instance_calls, create_device_calls);
    CHECK_MSG(lock_calls > 0 && lock_calls == unlock_calls, "queue lock %d, unlock %d", lock_calls, unlock_calls);
    CHECK(rd.frames > 0);
    printf("  softmoe: 0 instances and 0 devices created, %d submissions under the application's queue lock, "
           "while the application's thread submitted %d batches to the same queue\n", lock_calls, rd.frames);

    /* the application's objects still work after softmoe is gone, and are destroyed by it */
    CHECK(vkDeviceWaitIdle(device) == VK_SUCCESS);
    vkDestroyFence(device, rd.fence, NULL);
    vkDestroyDevice(device, NULL);
    if (messenger) vkDestroyDebugUtilsMessengerEXT(app_instance, messenger, NULL);
    vkDestroyInstance(app_instance, NULL);
    CHECK_MSG(app_messages == 0, "the validation layer reported %d message(s)", app_messages);
    if (validate) printf("  validation layer on the application's instance%s: no messages\n",
                         features.enabledValidationFeatureCount ? " (with synchronization validation)" : "");
    dlclose(loader);
    return test_finish("test_external_vulkan");
}
